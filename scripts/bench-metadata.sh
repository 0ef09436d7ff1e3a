#!/usr/bin/env bash
# Metadata bandwidth (not run in CI): the bytes a device downloads to learn about one new
# release, in a repository of many products, for the agent and for python-tuf's ngclient.
#
# Against the release-built server and agent (the same binaries as the other benchmarks; the
# bytes do not depend on the build) with a temporary data directory and a copy of keys-example:
#   1. PRODUCTS products (default 200), each with RELEASES releases (default 1) of a few KiB;
#   2. a device of the first product enrolls through the agent (`patchgate-agent enroll`), and
#      both the agent (`check`: report, refresh of the director and the image repository) and
#      ngclient (refresh + get_targetinfo of the product's newest release) start from their
#      provisioned roots;
#   3. the first product publishes one more release; the agent checks again and ngclient
#      refreshes and looks the new release up.
# Every request goes through a counting proxy (scripts/bench/metadata_proxy.py); the table gives
# the bytes of step 3 on the wire (the agent asks for gzip, which the server uses for metadata
# files of 1 KiB or more; ngclient's default fetcher does not ask), split by repository, and the
# uncompressed size of the snapshot (which lists every product's role, so it grows with the
# number of products).
#
# It also times every publish of the first product (curl's total time: upload, hashing, signing
# the role, snapshot and timestamp, commit) and prints the median of the 50 publishes ending at
# the 100th, 1 000th and 10 000th release it reaches (PRODUCTS=1 RELEASES=10000 for all three).
# Products keep the default retention (the 20 most recently listed releases, and whatever a
# device or a rollout needs), so the role a device downloads stays small however many releases
# were published.
#
# Usage: scripts/bench-metadata.sh      Env: PRODUCTS, RELEASES, KEEP_TMP=1,
#   POSTGRES=1 (a fresh database on BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432/test,
#   dropped afterwards; SQLite in the data directory otherwise)
set -euo pipefail
PRODUCTS=${PRODUCTS:-200}
RELEASES=${RELEASES:-1}
KEEP_TMP=${KEEP_TMP:-0}
POSTGRES=${POSTGRES:-0}
BENCH_POSTGRES=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=bench-metadata
# shellcheck source=scripts/bench-lib.sh
source "$repo/scripts/bench-lib.sh"
[[ $PRODUCTS =~ ^[1-9][0-9]*$ && $RELEASES =~ ^[1-9][0-9]*$ ]] || die "PRODUCTS and RELEASES must be positive whole numbers"

log "building the server and the agent (release)"
(cd "$repo" && cargo build --release --workspace --bins)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
bin=$target_dir/release/patchgate
agent=$target_dir/release/patchgate-agent
bash "$repo/scripts/ensure-venv.sh" pytuf
python=$repo/target/pytuf-venv/bin/python

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-metadata.XXXXXX")
server_pid="" proxy_pid="" pg_name=""
cleanup() {
    [[ -n $proxy_pid ]] && stop "$proxy_pid"
    [[ -n $server_pid ]] && stop "$server_pid"
    if [[ -n $pg_name ]]; then
        psql "$BENCH_POSTGRES" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS $pg_name WITH (FORCE)" >/dev/null ||
            printf 'bench-metadata: could not drop database %s\n' "$pg_name" >&2
    fi
    if [[ $KEEP_TMP == 1 ]]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

cp -r "$repo/keys-example" "$tmp/keys"
port=$(free_port)
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PATCHGATE_' || true)
export PATCHGATE_LISTEN=127.0.0.1:$port PATCHGATE_DATA_DIR=$tmp/data PATCHGATE_KEYS_DIR=$tmp/keys RUST_LOG=warn
backend=SQLite
if [[ $POSTGRES == 1 ]]; then
    "$repo/scripts/ensure-postgres.sh" >&2
    pg_name=patchgate_bench_metadata_$(printf '%04x%04x' $RANDOM $RANDOM)
    log "PostgreSQL: creating database $pg_name"
    psql "$BENCH_POSTGRES" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $pg_name" >/dev/null || die "could not create $pg_name"
    pg_base=${BENCH_POSTGRES%%\?*}
    export PATCHGATE_DATABASE_URL="${pg_base%/*}/$pg_name${BENCH_POSTGRES#"$pg_base"}"
    backend=PostgreSQL
fi
# No load balancer to drain for: SIGTERM stops the server at once.
export PATCHGATE_SHUTDOWN_DRAIN_SECONDS=0
(cd "$tmp" && exec "$bin" serve) >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in {1..300}; do curl -sf --noproxy '*' -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
curl -sf --noproxy '*' -o /dev/null "http://127.0.0.1:$port/healthz" || die "the server did not start: $(tail -5 "$tmp/server.log")"
admin=$(cd "$tmp" && "$bin" token create --role admin --name bench 2>/dev/null | tail -n 1)
[[ -n $admin ]] || die "token create failed"

proxy_port=$(free_port)
proxy_log=$tmp/proxy.log
: >"$proxy_log"
python3 "$repo/scripts/bench/metadata_proxy.py" "$proxy_port" "http://127.0.0.1:$port" "$proxy_log" &
proxy_pid=$!
base=http://127.0.0.1:$proxy_port
for _ in {1..100}; do curl -sf --noproxy '*' -o /dev/null "$base/healthz" && break; sleep 0.1; done

api() { curl -sSf --noproxy '*' -H "Authorization: Bearer $admin" "$@"; }
times=$tmp/publish-seconds
: >"$times"
publish() { # PRODUCT VERSION: the first product's publish times go to $times
    head -c 4096 /dev/urandom >"$tmp/fw.bin"
    local took
    took=$(api -o /dev/null -w '%{time_total}' -F version="$2" -F file=@"$tmp/fw.bin" \
        "http://127.0.0.1:$port/api/v1/products/$1/releases")
    if [[ $1 == p0000 ]]; then echo "$took" >>"$times"; fi
}
log "creating $PRODUCTS products with $RELEASES release(s) each"
for (( p = 0; p < PRODUCTS; p++ )); do
    name=$(printf 'p%04d' "$p")
    api -o /dev/null -H 'content-type: application/json' \
        -d "{\"name\": \"$name\", \"hardware_ids\": [\"hw-$name\"]}" "http://127.0.0.1:$port/api/v1/products"
    for (( r = 0; r < RELEASES; r++ )); do
        publish "$name" "1.0.$r"
        if (( PRODUCTS == 1 && (r + 1) % 1000 == 0 )); then log "  $(( r + 1 ))/$RELEASES releases"; fi
    done
    (( (p + 1) % 50 == 0 )) && log "  $(( p + 1 ))/$PRODUCTS products"
done

first=p0000
curl -sSf --noproxy '*' -o "$tmp/image-root.json" "http://127.0.0.1:$port/repo/metadata/1.root.json"
curl -sSf --noproxy '*' -o "$tmp/director-root.json" "http://127.0.0.1:$port/director/metadata/1.root.json"
token=$(api -H 'content-type: application/json' -d "{\"product\": \"$first\"}" \
    "http://127.0.0.1:$port/api/v1/enrollment-tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
state=$tmp/state
"$agent" enroll --server "$base" --enrollment-token "$token" --device-id dev-1 --product "$first" \
    --hardware-id "hw-$first" --image-root "$tmp/image-root.json" --director-root "$tmp/director-root.json" \
    --state-dir "$state" --allow-dev-keys >/dev/null
lookup() { "$python" "$repo/scripts/bench/ngclient_lookup.py" "$tmp/ngclient" "$base" "$tmp/image-root.json" "$1" >/dev/null; }

# Step 2: both clients start from their provisioned roots.
"$agent" check --state-dir "$state" >/dev/null
lookup "$first/1.0.$(( RELEASES - 1 ))/fw.bin"

# Step 3: one new release; what does each client download to learn about it?
publish "$first" "2.0.0"
mark=$(wc -l <"$proxy_log")
"$agent" check --state-dir "$state" >/dev/null
agent_end=$(wc -l <"$proxy_log")
lookup "$first/2.0.0/fw.bin"
sum() { awk -v from="$1" -v to="$2" -v pat="$3" 'NR > from && NR <= to && $1 == "GET" && $2 ~ pat { b += $4; n++ } END { printf "%d %d\n", b, n }' "$proxy_log"; }
read -r agent_image agent_image_n < <(sum "$mark" "$agent_end" '^/repo/metadata/')
read -r agent_director agent_director_n < <(sum "$mark" "$agent_end" '^/director/')
read -r ngclient ngclient_n < <(sum "$agent_end" "$(wc -l <"$proxy_log")" '^/repo/metadata/')
snapshot=$(curl -sSf --noproxy '*' "http://127.0.0.1:$port/repo/metadata/timestamp.json" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["signed"]["meta"]["snapshot.json"]["version"])')
snapshot_bytes=$(curl -sSf --noproxy '*' "http://127.0.0.1:$port/repo/metadata/$snapshot.snapshot.json" | wc -c)
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }

listed=$(api "http://127.0.0.1:$port/api/v1/products/$first/role" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["signed"]["targets"]))')
role_version=$(api "http://127.0.0.1:$port/api/v1/products/$first/role" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["signed"]["version"])')
role_bytes=$(curl -sSf --noproxy '*' "http://127.0.0.1:$port/repo/metadata/$role_version.$first.json" | wc -c)
# p50 of the 50 publishes ending at release N (milliseconds).
p50_at() {
    awk -v n="$1" 'NR > n - 50 && NR <= n { t[++k] = $1 * 1000 } END {
        if (k == 0) exit; for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (t[j] < t[i]) { x = t[i]; t[i] = t[j]; t[j] = x }
        printf "%.1f ms", (k % 2) ? t[(k + 1) / 2] : (t[k / 2] + t[k / 2 + 1]) / 2 }' "$times"
}

printf '\n## Metadata a device downloads to learn about one new release (scripts/bench-metadata.sh)\n\n'
printf 'Repository (%s): %d products, %d release(s) each, then one more release of %s.\n\n' "$backend" "$PRODUCTS" "$RELEASES" "$first"
printf 'Bytes on the wire (response bodies as sent: the agent asks for gzip, ngclient'"'"'s default fetcher does not).\n\n'
printf '| client | image repository metadata | director metadata | requests |\n|---|---:|---:|---:|\n'
printf '| patchgate-agent `check` | %s | %s | %d |\n' "$(kib "$agent_image")" "$(kib "$agent_director")" $(( agent_image_n + agent_director_n ))
printf '| python-tuf ngclient (refresh + get_targetinfo) | %s | — | %d |\n' "$(kib "$ngclient")" "$ngclient_n"
printf '\nThe snapshot (%d.snapshot.json) is %s uncompressed: it lists every product'"'"'s role.\n' "$snapshot" "$(kib "$snapshot_bytes")"
printf '%s'"'"'s role (%d.%s.json) lists %d of its %d releases: %s uncompressed.\n' \
    "$first" "$role_version" "$first" "$listed" $(( RELEASES + 1 )) "$(kib "$role_bytes")"
printf '\nPublish time of %s (curl, 4 KiB file; median of the 50 publishes ending at that release):\n\n' "$first"
printf '| releases in the product | publish p50 |\n|---:|---:|\n'
for n in 100 1000 10000; do
    if (( n <= RELEASES )); then printf '| %d | %s |\n' "$n" "$(p50_at "$n")"; fi
done
