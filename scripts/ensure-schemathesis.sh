#!/usr/bin/env bash
# Makes target/schemathesis-venv: a Python venv with a pinned schemathesis, which
# scripts/check-contract.sh runs against the OpenAPI document. Pinned so that a fixed seed
# generates the same requests from one run to the next. Does nothing when it is already there.
# Env: PYTHON (default python3).
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT_DIR/target/schemathesis-venv"
PYTHON="${PYTHON:-python3}"
VERSION="4.32.5"
LOCK="$ROOT_DIR/target/.schemathesis-venv.lock"
mkdir -p "$ROOT_DIR/target"

installed() {
    [[ -x "$VENV/bin/st" ]] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$VERSION')" >/dev/null 2>&1
}

exec 9>"$LOCK"
flock 9
if ! installed; then
    command -v "$PYTHON" >/dev/null 2>&1 || { echo "ensure-schemathesis: $PYTHON is required" >&2; exit 1; }
    rm -rf -- "$VENV"
    "$PYTHON" -m venv "$VENV" || { echo "ensure-schemathesis: cannot create $VENV with $PYTHON" >&2; exit 1; }
    PIP_NO_INPUT=1 timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION" ||
        { echo "ensure-schemathesis: pip install schemathesis==$VERSION into $VENV failed" >&2; exit 1; }
fi
installed || { echo "ensure-schemathesis: schemathesis $VERSION is not runnable from $VENV" >&2; exit 1; }
