# Redis for a Schooner cluster: Debian's redis-server on the same base as the other
# images (no registry needed). Users who can pull may pass redis_image="redis:7" instead;
# the manager starts either with the same redis-server command line.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data

VOLUME /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--dir", "/data", "--appendonly", "yes", "--save", "", "--protected-mode", "no"]
