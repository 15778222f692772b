#!/usr/bin/env bash
# Why: runs MLflow's own AI Gateway (the legacy YAML server that users run today via
# `mlflow gateway start`) as a peer to benchmark against, pointed at a local OpenAI-style
# origin (e.g. target/release/mock-origin). It writes a minimal YAML config (endpoint `chat`,
# llm/v1/chat, and `embeddings`, llm/v1/embeddings, both provider openai with api_base
# ORIGIN_URL/v1) into a temp dir and then `exec`s the server, so the caller's pid is the
# server's top process. Process tree: mlflow CLI (config watcher) -> gunicorn master ->
# WORKERS uvicorn workers. Stop it by killing that whole tree (children first, or
# the process group if you started it with setsid): a plain SIGTERM to the mlflow pid alone
# may leave gunicorn running.
#
# Usage: start.sh ORIGIN_URL PORT [WORKERS]     (WORKERS defaults to 2, MLflow's default)
# Env:   OPENAI_API_KEY  key sent to the origin (default: a dummy; the mock only wants one)
#        PEER_MLFLOW_VENV  venv made by setup.sh (default ~/.cache/edge-gateway/peer-mlflow-venv)
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 ORIGIN_URL PORT [WORKERS]" >&2
  exit 2
fi
origin="${1%/}"
port="$2"
workers="${3:-2}"

venv="${PEER_MLFLOW_VENV:-$HOME/.cache/edge-gateway/peer-mlflow-venv}"
if [[ ! -x "$venv/bin/mlflow" ]]; then
  echo "start.sh: $venv/bin/mlflow missing; run $(dirname "$0")/setup.sh first" >&2
  exit 1
fi

# The YAML refers to the key by env var; MLflow resolves `$VAR` itself.
export OPENAI_API_KEY="${OPENAI_API_KEY:-sk-peer-mlflow-dummy}"
# No network beyond loopback here, and no reason to phone home from a benchmark.
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

dir="$(mktemp -d "${TMPDIR:-/tmp}/peer-mlflow.XXXXXX")"
config="$dir/gateway.yaml"
# Kept while the server runs: MLflow watches this file and reloads workers when it changes.
cat >"$config" <<YAML
endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o-mini
      config:
        openai_api_key: \$OPENAI_API_KEY
        openai_api_base: ${origin}/v1
  - name: embeddings
    endpoint_type: llm/v1/embeddings
    model:
      provider: openai
      name: text-embedding-3-small
      config:
        openai_api_key: \$OPENAI_API_KEY
        openai_api_base: ${origin}/v1
YAML
echo "start.sh: config $config" >&2

exec "$venv/bin/mlflow" gateway start --config-path "$config" \
  --host 127.0.0.1 --port "$port" --workers "$workers"
