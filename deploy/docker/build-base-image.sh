#!/usr/bin/env bash
# Build schooner/base-python:3.11 -- an equivalent of python:3.11-slim -- without a
# container registry: a minimal Debian bookworm root file system (debootstrap) with
# python3, python3-venv and python3-pip, imported into the local Docker engine.
# Bookworm's python3 is 3.11, the same minor version as the clients that pickle models.
#
#   deploy/docker/build-base-image.sh [IMAGE]     (as root; needs debootstrap; ~1 minute)
#
# Does nothing when the image already exists. The managers build from it when the engine
# has no python:3.11-slim (or pass DockerContainerManager(base_image=...)).
set -euo pipefail
IMAGE="${1:-schooner/base-python:3.11}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is already built"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

ROOTFS="$(mktemp -d /tmp/schooner-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm into $ROOTFS ..."
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
    bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
# The host's CA bundle, so that pip inside builds trusts what the host trusts.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$ROOTFS/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
fi
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE"
echo "built $IMAGE"
