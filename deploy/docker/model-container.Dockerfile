# The model-container base image: Python, Schooner's base dependencies and the
# model_container package. Every model image is built FROM it (model.Dockerfile).
#
# Built by DockerContainerManager from a context it assembles (see deploy/README.md):
#   requirements.txt   Schooner's base requirements, numpy and cloudpickle pinned to the
#                      deploying client's versions (a pickle depends on them)
#   src/               the model_container package of the client
#   wheels/            optional wheelhouse; with PIP_ARGS="--no-index ..." the only source
#
# BASE_IMAGE is python:3.11-slim for real users; anything Debian-based with python3 and
# python3-venv works (the tests use schooner/base-python:3.11, built without a registry).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PIP_ARGS="--find-links /opt/schooner/wheels"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/schooner/venv \
    PATH=/opt/schooner/venv/bin:$PATH \
    PYTHONPATH=/opt/schooner/src

# A venv: Debian's system Python refuses pip installs (PEP 668), and one path for all bases.
RUN python3 -m venv /opt/schooner/venv \
 && (getent group schooner >/dev/null || groupadd --system --gid 10001 schooner) \
 && (getent passwd schooner >/dev/null || useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/schooner schooner)

COPY wheels/ /opt/schooner/wheels/
COPY requirements.txt /opt/schooner/requirements-model-container.txt
RUN pip install $PIP_ARGS -r /opt/schooner/requirements-model-container.txt

COPY src/ /opt/schooner/src/
# Fail the build, not the first replica, if the package cannot be imported.
RUN python -c "import model_container"

WORKDIR /opt/schooner
# Never root: the manager runs every container as 10001:10001 with no capabilities;
# what pip installed above (as root) stays read-only to the model.
USER 10001:10001
CMD ["python", "-m", "model_container"]
