#!/usr/bin/env bash
# Makes target/NAME-venv, a Python venv with one pinned tool from PyPI, for the checks that run
# clients and tools we did not write. Does nothing when it is already there; a half-made or stale
# venv is rebuilt. Several callers at once wait for one another.
#   pytuf         python-tuf 7.x (ngclient): scripts/check-python-tuf.sh, tests/it/split_trust.rs
#   schemathesis  schemathesis, pinned so that a fixed seed generates the same requests from one
#                 run to the next: tests/it/contract.rs
#   moto          moto's S3 server (with boto3), a real S3 API for the store tests:
#                 tests/python/s3_server.py, tests/it/s3.rs
#   conformance   the TUF conformance suite from TUF_CONFORMANCE_DIR (its own pins: tuf, pytest):
#                 scripts/check-tuf-conformance.sh
# Usage: scripts/ensure-venv.sh NAME. Env: PYTHON (default python3).
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${1:-}"
case "$NAME" in
    pytuf)
        SPEC='tuf>=7,<8'
        CHECK='import sys, tuf, tuf.ngclient; sys.exit(tuf.__version__.split(".")[0] != "7")'
        ;;
    schemathesis)
        SPEC='schemathesis==4.32.5'
        CHECK='import sys, importlib.metadata as m; sys.exit(m.version("schemathesis") != "4.32.5")'
        ;;
    moto)
        SPEC='moto[server]==5.2.5'
        CHECK='import sys, importlib.metadata as m, boto3, moto.server; sys.exit(m.version("moto") != "5.2.5")'
        ;;
    conformance)
        SPEC="${TUF_CONFORMANCE_DIR:?set TUF_CONFORMANCE_DIR to the folder of the suite}"
        suite_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$SPEC/tuf_conformance/__init__.py")
        [[ -n $suite_version ]] || { echo "ensure-venv: no __version__ in $SPEC/tuf_conformance/__init__.py" >&2; exit 1; }
        CHECK="import sys, importlib.metadata as m; sys.exit(m.version('tuf-conformance') != '$suite_version')"
        ;;
    *)
        echo "usage: scripts/ensure-venv.sh pytuf|schemathesis|moto|conformance" >&2
        exit 2
        ;;
esac
VENV="$ROOT_DIR/target/$NAME-venv"
PYTHON="${PYTHON:-python3}"
mkdir -p "$ROOT_DIR/target"

installed() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1
}

exec 9>"$ROOT_DIR/target/.$NAME-venv.lock"
flock 9
if ! installed; then
    command -v "$PYTHON" >/dev/null 2>&1 || { echo "ensure-venv: $PYTHON is required" >&2; exit 1; }
    rm -rf -- "$VENV"
    "$PYTHON" -m venv "$VENV" || { echo "ensure-venv: cannot create $VENV with $PYTHON" >&2; exit 1; }
    PIP_NO_INPUT=1 timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SPEC" ||
        { echo "ensure-venv: pip install '$SPEC' into $VENV failed" >&2; exit 1; }
fi
installed || { echo "ensure-venv: '$SPEC' is not usable from $VENV" >&2; exit 1; }
