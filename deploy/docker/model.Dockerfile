# The template of every model image: the model-container base, the model's
# pkgs_to_install, and its bundle (model.json + func.pkl) at /opt/schooner/model.
#
# Context (assembled by DockerContainerManager.build_model): requirements.txt (the
# bundle's pkgs, possibly empty), bundle/. pip finds the wheelhouse, if any, where the
# model-container base put it (/opt/schooner/wheels).
# Packages come before the bundle so that models with the same packages share a layer.
ARG MODEL_CONTAINER_IMAGE=schooner/model-container:latest
FROM ${MODEL_CONTAINER_IMAGE}

ARG PIP_ARGS="--find-links /opt/schooner/wheels"
USER root
COPY requirements.txt /opt/schooner/requirements-model.txt
RUN if [ -s /opt/schooner/requirements-model.txt ]; then \
        pip install $PIP_ARGS -r /opt/schooner/requirements-model.txt; \
    fi

COPY bundle/ /opt/schooner/model/
ENV SCHOONER_BUNDLE=/opt/schooner/model
USER 10001:10001
CMD ["python", "-m", "model_container"]
