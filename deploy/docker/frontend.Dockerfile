# The frontends' image: the model-container base plus the query and management frontends.
# One image, two commands:
#   python -m query_frontend --redis-url ... --rpc-port 7000
#   python -m management_frontend --redis-url ...
#
# Context (assembled by DockerContainerManager): requirements.txt (the `frontend` extra),
# src/ (query_frontend and management_frontend of the client). pip finds the wheelhouse,
# if any, where the model-container base put it (/opt/schooner/wheels).
ARG MODEL_CONTAINER_IMAGE=schooner/model-container:latest
FROM ${MODEL_CONTAINER_IMAGE}

ARG PIP_ARGS="--find-links /opt/schooner/wheels"
USER root
COPY requirements.txt /opt/schooner/requirements-frontend.txt
RUN pip install $PIP_ARGS -r /opt/schooner/requirements-frontend.txt

COPY src/ /opt/schooner/src/
RUN python -c "import query_frontend.app, management_frontend.app"

USER 10001:10001
EXPOSE 1337 1338 7000
CMD ["python", "-m", "query_frontend", "--host", "0.0.0.0", "--rpc-host", "0.0.0.0"]
