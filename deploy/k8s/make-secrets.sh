#!/bin/sh
# Make the cluster's Secrets, once, before the first `kubectl apply -k deploy/k8s`:
#
#   deploy/k8s/make-secrets.sh            # cluster "default" in namespace "schooner"
#
# The manifests mount them (the frontends: schooner-default-frontend-secrets; Redis:
# schooner-default-redis-config) and the admin client reads the admin token from
# schooner-default-credentials. They are the Secrets KubernetesContainerManager.start()
# makes when missing: fresh random values (an admin token, a Redis password, two CURVE
# key pairs), generated on this machine by Schooner's own code and piped to kubectl --
# never written to disk or shown. `kubectl create` (not apply): Secrets that exist
# already, a running cluster's, are kept and reported as AlreadyExists.
#
# Needs python with Schooner installed (pip install 'schooner[kubernetes]', or run from
# a checkout) and kubectl pointed at the cluster. NAMESPACE and CLUSTER override.
set -eu
NAMESPACE="${NAMESPACE:-schooner}"
CLUSTER="${CLUSTER:-default}"
PYTHON="${PYTHON:-python3}"
kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE"
"$PYTHON" -c 'import sys; from admin.container_managers._k8s_credentials import main; sys.exit(main())' \
    --cluster "$CLUSTER" --namespace "$NAMESPACE" | kubectl create -f -
