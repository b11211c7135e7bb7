#!/usr/bin/env bash
# Apply vfe's manifests to the cluster kubectl points at, in order, and wait for the rollout.
#
#   deploy/k8s/deploy.sh [IMAGE]        IMAGE defaults to vfe:latest
#
# API keys: when API_KEYS is set (comma-separated), the vfe-api-keys Secret is created or
# updated from it. When it is not set, an existing Secret is left as it is; only when there
# is none yet is the example (20-secret.yaml, a placeholder key) applied, with a warning.
#
# Database: with DATABASE_URL set (an external PostgreSQL), the vfe-database Secret is made
# from it and the in-cluster PostgreSQL (35-postgres.yaml) is not applied. Without it, an
# existing Secret is kept, or one is made with a random password, and PostgreSQL runs in
# the cluster.
#
# Autoscaling: the workers scale on CPU (56-worker-hpa.yaml); with VFE_KEDA=1, on the
# queue's depth with KEDA instead (optional/keda-scaledobject.yaml; KEDA must be installed).
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

in_cluster_database=1
if [[ -n "${DATABASE_URL:-}" ]]; then
  say "Secret vfe-database from DATABASE_URL (an external PostgreSQL)"
  in_cluster_database=0
  printf '%s' "$DATABASE_URL" \
    | kubectl -n "$namespace" create secret generic vfe-database \
        --from-file=DATABASE_URL=/dev/stdin --dry-run=client -o yaml \
    | kubectl apply -f -
elif kubectl -n "$namespace" get secret vfe-database >/dev/null 2>&1; then
  say "DATABASE_URL not set: keeping the existing Secret vfe-database"
  # made from an external DATABASE_URL earlier: it has no in-cluster password
  if [[ -z "$(kubectl -n "$namespace" get secret vfe-database \
                -o 'jsonpath={.data.POSTGRES_PASSWORD}' 2>/dev/null)" ]]; then
    in_cluster_database=0
  fi
else
  say "Secret vfe-database with a new random password for the in-cluster PostgreSQL"
  # Hex, so it needs no escaping in a URL; sent on standard input, never on a command line.
  password="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  {
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: vfe-database\n'
    printf '  namespace: %s\ntype: Opaque\nstringData:\n' "$namespace"
    printf '  DATABASE_URL: postgresql://vfe:%s@postgres:5432/vfe\n' "$password"
    printf '  POSTGRES_PASSWORD: %s\n' "$password"
  } | kubectl apply -f -
fi

kubectl apply -f "$here/30-redis.yaml"
if [[ "$in_cluster_database" == "1" ]]; then
  kubectl apply -f "$here/35-postgres.yaml"
fi
kubectl apply -f "$here/40-pvc.yaml"
# The image line is replaced on the way in, so a new image means exactly one rollout.
for file in 50-deployment.yaml 55-worker.yaml; do
  sed "s|^\( *image: \)vfe:latest|\1$image|" "$here/$file" | kubectl apply -f -
done
if [[ "${VFE_KEDA:-}" == "1" ]]; then
  kubectl -n "$namespace" delete hpa vfe-worker --ignore-not-found
  kubectl apply -f "$here/optional/keda-scaledobject.yaml"
else
  kubectl apply -f "$here/56-worker-hpa.yaml"
fi
kubectl apply -f "$here/60-service.yaml"
kubectl apply -f "$here/70-ingress.yaml"

kubectl -n "$namespace" rollout status deployment/redis --timeout=120s
if [[ "$in_cluster_database" == "1" ]]; then
  kubectl -n "$namespace" rollout status statefulset/postgres --timeout=300s
fi
kubectl -n "$namespace" rollout status deployment/vfe --timeout=300s
kubectl -n "$namespace" rollout status deployment/vfe-worker --timeout=300s
say "vfe $image is ready"
