#!/usr/bin/env bash
# Why: the shared e2e venv (~/.cache/edge-gateway/venv) has mlflow without the gateway
# extras (slowapi, uvicorn[standard], ...) and must not be modified. This creates a separate
# venv holding MLflow's AI Gateway server, pinned by requirements.txt, so the peer benchmark
# runs the exact same Python stack every time. It rebuilds only when the venv is missing or
# requirements.txt changed (sha256 stamp), so a warm run is a no-op. Prints the venv path
# (the only thing on stdout); progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
venv="${PEER_MLFLOW_VENV:-$HOME/.cache/edge-gateway/peer-mlflow-venv}"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -x "$venv/bin/mlflow" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv"
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  echo "peer-mlflow: creating venv $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
rm -f "$stamp"
echo "peer-mlflow: installing $req" >&2
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >&2
# Fail early if the gateway CLI is not usable (missing extras would show up here).
"$venv/bin/mlflow" gateway start --help >/dev/null
echo "$want" >"$stamp"
echo "$venv"
