#!/usr/bin/env bash
# The TUF community's client conformance suite (theupdateframework/tuf-conformance, MIT) against
# the agent's conformance client: the agent's own refresh and download code behind the suite's
# command-line protocol (agent/src/bin/tuf-conformance-client.rs, run through
# scripts/tuf-conformance-client). Expected failures, each explained: scripts/
# tuf-conformance-client.xfails; the suite fails the run on any other failure, and on an expected
# one that passes.
#
# The suite is not part of this repository: it is run from TUF_CONFORMANCE_DIR (default
# ../shared/tuf-conformance, beside the repository). Without it,
# this check says so and is skipped (exit 0); CI has it.
#
# Needs: the client built (`cargo test --workspace` builds it; or `cargo build -p
# patchgate-agent --bin tuf-conformance-client`), python3 >= 3.10, and faketime (installed here
# from Debian's packages when missing, for the expiry tests).
# Env: TUF_CONFORMANCE_DIR, TUF_CONFORMANCE_CLIENT (the client binary), PYTHON.
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="${TUF_CONFORMANCE_DIR:-$ROOT_DIR/../shared/tuf-conformance}"
if [[ ! -d $SUITE/tuf_conformance ]]; then
    echo "SKIPPED: the TUF conformance suite is not at $SUITE (set TUF_CONFORMANCE_DIR to its folder)"
    exit 0
fi
SUITE="$(cd "$SUITE" && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT_DIR/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT_DIR/$TARGET_DIR" ;; esac
export TUF_CONFORMANCE_CLIENT="${TUF_CONFORMANCE_CLIENT:-$TARGET_DIR/debug/tuf-conformance-client}"
[[ -x $TUF_CONFORMANCE_CLIENT ]] || {
    echo "check-tuf-conformance: $TUF_CONFORMANCE_CLIENT is missing: cargo build -p patchgate-agent --bin tuf-conformance-client" >&2
    exit 1
}
if ! command -v faketime >/dev/null; then
    echo "== installing faketime (the suite's expiry tests run the client under it)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y faketime >/dev/null || { apt-get update >/dev/null && apt-get install -y faketime >/dev/null; } ||
        { echo "check-tuf-conformance: could not install faketime" >&2; exit 1; }
fi
TUF_CONFORMANCE_DIR="$SUITE" bash "$ROOT_DIR/scripts/ensure-venv.sh" conformance
VENV="$ROOT_DIR/target/conformance-venv"
# The suite starts its own HTTP server on loopback; a proxy from the environment must not see it.
cd "$ROOT_DIR/target"
NO_PROXY='*' no_proxy='*' "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$SUITE/tuf_conformance" \
    --entrypoint "$ROOT_DIR/scripts/tuf-conformance-client"
