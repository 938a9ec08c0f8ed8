# Redis for a Schooner cluster: Debian's redis-server on the same base as the other
# images (no registry needed). Users who can pull may pass redis_image="redis:7" instead;
# the manager starts either with the same redis-server command line.
# It runs as user "schooner" (uid 10001, as the other images), which owns /data: a new
# named volume mounted there takes that ownership from the image.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && (getent group schooner >/dev/null || groupadd --system --gid 10001 schooner) \
 && (getent passwd schooner >/dev/null || useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /data schooner) \
 && mkdir -p /data \
 && chown 10001:10001 /data

VOLUME /data
WORKDIR /data
USER 10001:10001
EXPOSE 6379
CMD ["redis-server", "--dir", "/data", "--appendonly", "yes", "--save", "", "--protected-mode", "no"]
