#!/usr/bin/env bash
# Makes target/pytuf-venv: a Python venv with python-tuf 7.x (ngclient), which the
# interoperability checks (scripts/check-python-tuf.sh and the split-trust integration tests)
# run. Does nothing when it is already there; a half-made or stale venv is rebuilt.
# Env: PYTHON (default python3).
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT_DIR/target/pytuf-venv"
PYTHON="${PYTHON:-python3}"
LOCK="$ROOT_DIR/target/.pytuf-venv.lock"
mkdir -p "$ROOT_DIR/target"

tuf_ok() {
    [[ -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c 'import sys, tuf, tuf.ngclient; sys.exit(0 if tuf.__version__.split(".")[0] == "7" else 1)' \
            >/dev/null 2>&1
}

exec 9>"$LOCK"
flock 9
if ! tuf_ok; then
    command -v "$PYTHON" >/dev/null 2>&1 || { echo "ensure-pytuf: $PYTHON is required" >&2; exit 1; }
    rm -rf -- "$VENV"
    "$PYTHON" -m venv "$VENV" || { echo "ensure-pytuf: cannot create $VENV with $PYTHON" >&2; exit 1; }
    PIP_NO_INPUT=1 timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'tuf>=7,<8' ||
        { echo "ensure-pytuf: pip install 'tuf>=7,<8' into $VENV failed" >&2; exit 1; }
fi
tuf_ok || { echo "ensure-pytuf: python-tuf 7.x is not importable from $VENV" >&2; exit 1; }
