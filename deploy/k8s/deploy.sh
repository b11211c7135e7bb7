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
# Storage: with STORAGE_URL=s3://bucket/prefix, frames, uploads and downloaded sources go
# to that bucket. The ConfigMap vfe-storage is made from STORAGE_URL, S3_ENDPOINT_URL (unset:
# AWS), AWS_REGION (us-east-1) and FRAME_URLS (stream), and the Secret vfe-s3 from
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (without them, an existing one is kept); the
# API and workers of optional/s3-storage.yaml, each with scratch of its own, replace
# 50-deployment.yaml and 55-worker.yaml, and the ReadWriteMany claim (40-pvc.yaml) is not
# applied. The AWS_* keys are read only along with STORAGE_URL, so a shell's own keys never
# get into the cluster by chance. Later runs without STORAGE_URL keep an s3:// vfe-storage
# and vfe-s3 as they are (delete the ConfigMap to go back to the shared volume).
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
if [[ -n "${STORAGE_URL:-}" && ! "$STORAGE_URL" =~ ^s3://[^/]+ ]]; then
  say "STORAGE_URL must be s3://bucket/prefix here (without it, files are on 40-pvc.yaml)"
  exit 2
fi
if [[ -n "${STORAGE_URL:-}" && -n "${AWS_ACCESS_KEY_ID:-}${AWS_SECRET_ACCESS_KEY:-}" \
      && ( -z "${AWS_ACCESS_KEY_ID:-}" || -z "${AWS_SECRET_ACCESS_KEY:-}" ) ]]; then
  say "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"; exit 2
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

s3_storage=0
if [[ -n "${STORAGE_URL:-}" ]]; then
  s3_storage=1
  say "ConfigMap vfe-storage from STORAGE_URL ($STORAGE_URL)"
  storage=(--from-literal=STORAGE_URL="$STORAGE_URL"
           --from-literal=AWS_REGION="${AWS_REGION:-us-east-1}"
           --from-literal=FRAME_URLS="${FRAME_URLS:-stream}")
  if [[ -n "${S3_ENDPOINT_URL:-}" ]]; then  # unset: AWS itself
    storage+=(--from-literal=S3_ENDPOINT_URL="$S3_ENDPOINT_URL")
  fi
  kubectl -n "$namespace" create configmap vfe-storage "${storage[@]}" \
      --dry-run=client -o yaml \
    | kubectl apply -f -
  if [[ -n "${AWS_ACCESS_KEY_ID:-}" ]]; then
    say "Secret vfe-s3 from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    # Base64 (any character is safe in the YAML), made by a builtin printf into base64's
    # standard input: the keys never appear on a command line.
    b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
    {
      printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: vfe-s3\n'
      printf '  namespace: %s\ntype: Opaque\ndata:\n' "$namespace"
      printf '  AWS_ACCESS_KEY_ID: %s\n' "$(b64 "$AWS_ACCESS_KEY_ID")"
      printf '  AWS_SECRET_ACCESS_KEY: %s\n' "$(b64 "$AWS_SECRET_ACCESS_KEY")"
    } | kubectl apply -f -
  elif kubectl -n "$namespace" get secret vfe-s3 >/dev/null 2>&1; then
    say "AWS_ACCESS_KEY_ID not set: keeping the existing Secret vfe-s3"
  else
    say "no Secret vfe-s3 yet: run with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set"
    exit 2
  fi
elif [[ "$(kubectl -n "$namespace" get configmap vfe-storage \
            -o 'jsonpath={.data.STORAGE_URL}' 2>/dev/null)" == s3://* ]]; then
  s3_storage=1
  say "STORAGE_URL not set: keeping the ConfigMap vfe-storage and the Secret vfe-s3 (s3://…)"
fi

kubectl apply -f "$here/30-redis.yaml"
if [[ "$in_cluster_database" == "1" ]]; then
  kubectl apply -f "$here/35-postgres.yaml"
fi
if [[ "$s3_storage" == "1" ]]; then
  # Nothing shared but PostgreSQL and the bucket: no ReadWriteMany claim. One from earlier
  # runs is left as it is, with whatever files it holds.
  deployments=(optional/s3-storage.yaml)
else
  kubectl apply -f "$here/40-pvc.yaml"
  deployments=(50-deployment.yaml 55-worker.yaml)
fi
# The image line is replaced on the way in, so a new image means exactly one rollout.
for file in "${deployments[@]}"; do
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
