#!/usr/bin/env bash
# Interoperability check: python-tuf's ngclient (PyPI `tuf` 7.x) must accept everything
# patchgate's image repository signs, including after a root rotation (docs/design.md §1, §3).
#
# What it does, against a real server on a loopback port and a temporary copy of keys-example/:
#   1. builds target/debug/patchgate (unless PATCHGATE_BIN names a server binary already built)
#      and installs tuf 7.x into the venv target/pytuf-venv;
#   2. creates two products and publishes three releases with random content;
#   3. bootstraps ngclient from root v1 and downloads and verifies every target
#      (tests/python/ngclient_check.py); an unpublished name must not be found;
#   4. rotates the image root (3 new keys, threshold 2), publishes a fourth release, and checks
#      that clients bootstrapped from the OLD root v1 (fresh, and with the cache of step 3)
#      follow to root v2 and verify all four targets; so must a client bootstrapped from v2.
# Prints one line per check and ends with `N passed, M failed`; exits 1 if anything failed.
#
# Usage: scripts/check-python-tuf.sh        (from anywhere; needs cargo, python3 >= 3.9, curl)
# Env:   PYTHON (default python3) to create the venv with; CARGO_TARGET_DIR is honoured;
#        PATCHGATE_BIN: the server binary to check instead of building one. scripts/test.sh
#        passes the one `cargo test --workspace` just built: `cargo build --bin patchgate` alone
#        resolves the dependencies' features without the dev-dependencies and rebuilt several
#        of them, minutes of every CI run.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT_DIR/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT_DIR/$TARGET_DIR" ;; esac
BIN="${PATCHGATE_BIN:-$TARGET_DIR/debug/patchgate}"
VENV="$ROOT_DIR/target/pytuf-venv"
HELPER="$ROOT_DIR/tests/python/ngclient_check.py"
PYTHON="${PYTHON:-python3}"

PASSED=0
FAILED=0
TMP=""
SERVER_PID=""

pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$*"; }
note() { printf '== %s\n' "$*"; }

summary() {
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
}

show_server_log() {
    if [[ -n "$TMP" && -f "$TMP/server.log" ]]; then
        echo "---- server log (last 80 lines) ----"
        tail -n 80 "$TMP/server.log" || true
        echo "---- end of server log ----"
    fi
}

# A step that cannot go on: count it, show the server log, print the summary, exit 1.
die() {
    fail "$*"
    show_server_log
    summary
    exit 1
}

cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
note "build and tools"

command -v curl >/dev/null 2>&1 || die "curl is required"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON is required"

if [[ -n "${PATCHGATE_BIN:-}" ]]; then
    [[ -x "$BIN" ]] || die "PATCHGATE_BIN=$BIN is not an executable file"
    pass "server binary $BIN (PATCHGATE_BIN)"
elif cargo build --bin patchgate --quiet; then
    pass "cargo build --bin patchgate"
    [[ -x "$BIN" ]] || die "binary $BIN exists after the build"
else
    die "cargo build --bin patchgate"
fi

bash "$ROOT_DIR/scripts/ensure-venv.sh" pytuf || die "scripts/ensure-venv.sh pytuf (python-tuf 7.x in $VENV)"
TUF_VERSION="$("$VENV/bin/python" -c 'import tuf; print(tuf.__version__)')"
pass "python-tuf $TUF_VERSION in ${VENV#"$ROOT_DIR"/}"

# ---------------------------------------------------------------------------------------------
note "server on a temporary copy of keys-example/"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/pytuf-check.XXXXXX")"
cp -r "$ROOT_DIR/keys-example" "$TMP/keys"
mkdir -p "$TMP/data" "$TMP/firmware"
: >"$TMP/patchgate.toml" # explicit empty config: a developer's ./patchgate.toml must not leak in

# Only our settings: the config rejects unknown PATCHGATE_* variables, and a stray
# PATCHGATE_DATABASE_URL or PATCHGATE_STORE_URL would point the server elsewhere.
while IFS= read -r var; do
    unset "$var"
done < <(compgen -e | grep '^PATCHGATE_' || true)

PORT="$("$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')"
BASE="http://127.0.0.1:$PORT"
export PATCHGATE_CONFIG="$TMP/patchgate.toml"
export PATCHGATE_LISTEN="127.0.0.1:$PORT"
# No load balancer to drain for: SIGTERM stops the server at once.
export PATCHGATE_SHUTDOWN_DRAIN_SECONDS=0
export PATCHGATE_DATA_DIR="$TMP/data"
export PATCHGATE_KEYS_DIR="$TMP/keys"
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

NO_COLOR=1 "$BIN" serve >"$TMP/server.log" 2>&1 </dev/null &
SERVER_PID=$!

healthy=""
for _ in $(seq 1 300); do # 300 x 0.1 s = 30 s
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        break
    fi
    if curl -fsS --max-time 2 -o /dev/null "$BASE/healthz" 2>/dev/null; then
        healthy=1
        break
    fi
    sleep 0.1
done
[[ -n "$healthy" ]] || die "server answers $BASE/healthz within 30 s"
pass "server up on $BASE (/healthz)"

TOKEN="$(timeout 60 "$BIN" token create --role admin --name pytuf-check </dev/null 2>"$TMP/token.err" | tail -n 1)" ||
    { cat "$TMP/token.err"; die "patchgate token create --role admin"; }
[[ "$TOKEN" == pgt_* ]] || { cat "$TMP/token.err"; die "patchgate token create printed a pgt_ token"; }
pass "admin token created"

create_product() { # NAME HARDWARE_ID
    local code
    code="$(curl -sS --max-time 30 -o "$TMP/product.out" -w '%{http_code}' -X POST \
        -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d "{\"name\":\"$1\",\"hardware_ids\":[\"$2\"]}" "$BASE/api/v1/products")" || code="curl error"
    if [[ "$code" == 201 ]]; then
        pass "product $1 created (hardware id $2)"
    else
        cat "$TMP/product.out" 2>/dev/null && echo
        die "product $1 created: HTTP $code"
    fi
}
create_product pump-x1 pump-x1-revA
create_product monitor-m2 monitor-m2-revB

# Expected targets as "name=sha256", in publish order.
EXPECT=()
publish() { # PRODUCT VERSION FILENAME
    local product="$1" version="$2" file="$TMP/firmware/$1-$2/$3" out name sha local_sha size
    mkdir -p "$(dirname "$file")"
    size=$((4096 + RANDOM % 8192))
    head -c "$size" /dev/urandom >"$file"
    local_sha="$(sha256sum "$file" | cut -d' ' -f1)"
    if ! out="$(timeout 120 "$BIN" release publish --server "$BASE" --token "$TOKEN" \
        --product "$product" --version "$version" "$file" </dev/null 2>"$TMP/publish.err")"; then
        printf '%s\n' "$out"
        cat "$TMP/publish.err"
        die "publish $product $version"
    fi
    name="$(printf '%s\n' "$out" | sed -n 's/^target: *//p' | head -n 1)"
    sha="$(printf '%s\n' "$out" | sed -n 's/^sha256: *//p' | head -n 1)"
    if [[ "$name" == "$product/$version/$3" && "$sha" == "$local_sha" ]]; then
        pass "published $name ($size bytes, sha256 ${sha:0:12}...)"
    else
        printf '%s\n' "$out"
        die "publish $product $version reported target '$name' sha256 '$sha' (expected $product/$version/$3, $local_sha)"
    fi
    EXPECT+=("$name=$sha")
}
publish pump-x1 1.0.0 pump-fw.bin
publish pump-x1 1.1.0 pump-fw.bin
publish monitor-m2 2.0.0 monitor-m2.img

# ---------------------------------------------------------------------------------------------
root_version() { # FILE -> prints signed.version of a root
    "$VENV/bin/python" -c 'import json, sys
m = json.load(open(sys.argv[1], "rb"))
assert m["signed"]["_type"] == "root", m["signed"]["_type"]
print(m["signed"]["version"])' "$1"
}

export_root() { # OUT EXPECTED_VERSION
    local v
    if ! timeout 60 "$BIN" repo export-root --repo image --out "$1" </dev/null >"$TMP/export.out" 2>&1; then
        cat "$TMP/export.out"
        die "repo export-root --repo image"
    fi
    v="$(root_version "$1" 2>&1)" || die "exported root $1 is a root: $v"
    [[ "$v" == "$2" ]] || die "exported image root is v$2 (got v$v)"
    pass "exported image root v$v ($(sha256sum "$1" | cut -c1-12)...)"
}

# Runs ngclient_check.py and counts its PASS/FAIL lines into ours.
ngclient() { # LABEL ROOT_FILE METADATA_DIR EXPECTED_ROOT_VERSION
    local label="$1" root="$2" mdir="$3" want="$4" rc=0 p f args=()
    local e
    for e in "${EXPECT[@]}"; do args+=(--expect "$e"); done
    set +e
    timeout 300 "$VENV/bin/python" "$HELPER" \
        --label "$label" \
        --metadata-url "$BASE/repo/metadata/" \
        --targets-url "$BASE/repo/targets/" \
        --root "$root" \
        --metadata-dir "$mdir" \
        --download-dir "$TMP/downloads/$label" \
        --expect-root-version "$want" \
        --hardware-id pump-x1=pump-x1-revA \
        --hardware-id monitor-m2=monitor-m2-revB \
        --absent "pump-x1/9.9.9/pump-fw.bin" \
        --absent "pump-x1/1.0.0/other.bin" \
        --absent "no-such-product/1.0.0/fw.bin" \
        "${args[@]}" </dev/null >"$TMP/ngclient-$label.out" 2>&1
    rc=$?
    set -e
    cat "$TMP/ngclient-$label.out"
    p="$(grep -c '^PASS ' "$TMP/ngclient-$label.out" || true)"
    f="$(grep -c '^FAIL ' "$TMP/ngclient-$label.out" || true)"
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [[ "$rc" -ne 0 && "$f" -eq 0 ]]; then
        fail "[$label] ngclient_check.py exited $rc without a FAIL line"
    fi
    if [[ "$rc" -ne 0 ]]; then
        show_server_log
    fi
}

note "ngclient bootstrapped from root v1"
export_root "$TMP/root-v1.json" 1
ngclient v1-fresh "$TMP/root-v1.json" "$TMP/client-v1-fresh" 1

# ---------------------------------------------------------------------------------------------
note "root rotation: 3 new root keys, threshold 2"

if timeout 120 "$BIN" repo rotate-root --root-keys 3 --root-threshold 2 </dev/null >"$TMP/rotate.out" 2>&1; then
    pass "repo rotate-root --root-keys 3 --root-threshold 2"
else
    cat "$TMP/rotate.out"
    die "repo rotate-root --root-keys 3 --root-threshold 2"
fi
export_root "$TMP/root-v2.json" 2
code="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$BASE/repo/metadata/2.root.json")" || code="curl error"
if [[ "$code" == 200 ]]; then pass "server serves 2.root.json"; else fail "server serves 2.root.json: HTTP $code"; fi
code="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$BASE/repo/metadata/3.root.json")" || code="curl error"
if [[ "$code" == 404 ]]; then pass "3.root.json does not exist yet (404)"; else fail "3.root.json answers 404: HTTP $code"; fi

publish pump-x1 1.2.0 pump-fw.bin

note "ngclient after the rotation"
# A device provisioned before the rotation, first run: must walk 1.root.json -> 2.root.json.
ngclient v1-fresh-after-rotation "$TMP/root-v1.json" "$TMP/client-v1-rotated" 2
# The client of the first run, with its cached root v1, timestamp, snapshot and targets.
ngclient v1-cached-after-rotation "$TMP/root-v1.json" "$TMP/client-v1-fresh" 2
# A device provisioned after the rotation.
ngclient v2-fresh "$TMP/root-v2.json" "$TMP/client-v2-fresh" 2

# ---------------------------------------------------------------------------------------------
if [[ "$FAILED" -ne 0 ]]; then
    summary
    exit 1
fi
summary
