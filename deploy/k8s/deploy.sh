#!/usr/bin/env bash
# Apply vfe's manifests to the cluster kubectl points at, in order, and wait for the rollout.
#
#   deploy/k8s/deploy.sh [IMAGE]        IMAGE defaults to vfe:latest
#
# API keys: when API_KEYS is set (comma-separated), the vfe-api-keys Secret is created or
# updated from it. When it is not set, an existing Secret is left as it is; only when there
# is none yet is the example (20-secret.yaml, a placeholder key) applied, with a warning.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
namespace="vfe"
image="${1:-vfe:latest}"
say() { printf 'deploy: %s\n' "$*" >&2; }

if [[ ! "$image" =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]]; then
  say "not an image name: $image"; exit 2
fi

kubectl apply -f "$here/00-namespace.yaml"
kubectl apply -f "$here/10-configmap.yaml"

if [[ -n "${API_KEYS:-}" ]]; then
  say "Secret vfe-api-keys from API_KEYS"
  # Read from standard input, so the keys never appear in a process list.
  printf '%s' "$API_KEYS" \
    | kubectl -n "$namespace" create secret generic vfe-api-keys \
        --from-file=API_KEYS=/dev/stdin --dry-run=client -o yaml \
    | kubectl apply -f -
elif kubectl -n "$namespace" get secret vfe-api-keys >/dev/null 2>&1; then
  say "API_KEYS not set: keeping the existing Secret vfe-api-keys"
else
  say "WARNING: API_KEYS not set: applying the EXAMPLE key from 20-secret.yaml;"
  say "         run again with API_KEYS='your-key' before exposing the service"
  kubectl apply -f "$here/20-secret.yaml"
fi

kubectl apply -f "$here/30-redis.yaml"
kubectl apply -f "$here/40-pvc.yaml"
# The image line is replaced on the way in, so a new image means exactly one rollout.
sed "s|^\( *image: \)vfe:latest|\1$image|" "$here/50-deployment.yaml" | kubectl apply -f -
kubectl apply -f "$here/60-service.yaml"
kubectl apply -f "$here/70-ingress.yaml"

kubectl -n "$namespace" rollout status deployment/redis --timeout=120s
kubectl -n "$namespace" rollout status deployment/vfe --timeout=300s
say "vfe $image is ready"
