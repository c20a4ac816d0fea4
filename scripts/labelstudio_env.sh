#!/usr/bin/env bash
# Create Label Studio's own venv <project>/.venv-ls with the pinned label-studio (annotation.
# label_studio_version in params.yaml, default 1.23.2). It cannot share the app venv: label-studio
# 1.23.2 pins python-json-logger==2.0.4, prefect 3.9 needs >=2.0.7.
# Idempotent (a completion stamp in the venv); a half-built venv from a killed run is rebuilt.
# Needs the app venv (.venv, or $PYTHON) with this package installed; takes 1-2.5 min the first time.
# Usage: scripts/labelstudio_env.sh [PROJECT_ROOT]
set -euo pipefail
ROOT="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PY" -m annotation.cli --root "$ROOT" install
