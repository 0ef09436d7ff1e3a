#!/usr/bin/env bash
# Benchmark of publishing one large firmware file (not run in CI).
#
# Builds the release binary, starts a throw-away server on the development keys, publishes a
# file of random data through the HTTP API with curl and downloads it back, then prints:
#   - publish throughput against `sha256sum` over the same file   (goal: ratio >= 0.5)
#   - the server's peak resident memory (VmHWM)                   (goal: < 100 MiB)
#   - download throughput against nginx serving the same blob file (sendfile on), with one
#     curl and with 4 at once                                      (goal: ratio >= 0.8 each)
#     (the median of ROUNDS alternating rounds of each, with the range of the rounds' ratios)
# A missed goal is reported as MISS but does not fail the script; a wrong hash does.
#
# Usage:  scripts/bench-publish.sh
# Environment:
#   SIZE_MIB      size of the test file in MiB (default 1024)
#   ROUNDS        download rounds, each patchgate then nginx, one curl then 4 (default 5)
#   PORT          port for the server (default: a free one)
#   BENCH_TMPDIR  where to create the temporary directory (default $TMPDIR or /tmp);
#                 it needs about 3 x SIZE_MIB of free space
#   KEEP_TMP=1    keep the temporary directory (server log, RSS samples) for inspection
#
# MB/s figures are 10^6 bytes per second; sizes and memory are in MiB.
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-1024}
KEEP_TMP=${KEEP_TMP:-0}
RATIO_GOAL=0.5
RSS_GOAL_MIB=100
DOWNLOAD_GOAL=0.8
ROUNDS=${ROUNDS:-5}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/target/release/patchgate

BENCH_NAME=bench-publish
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
now() { date +%s.%N; }
# mbps BYTES SECONDS -> MB/s (10^6 bytes per second)
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# median N...: the middle value (the mean of the two middle ones for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# range A B / C D ...: the lowest and highest ratio of paired values (pairs as "a/b").
ratio_range() { printf '%s\n' "$@" | awk -F/ '{ r = $1 / $2; if (NR == 1 || r < lo) lo = r; if (NR == 1 || r > hi) hi = r } END { printf "%.2f-%.2f", lo, hi }'; }
# verdict VALUE OP GOAL -> PASS | MISS
verdict() { awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? (v >= g) : (v < g); print ok ? "PASS" : "MISS" }'; }

[[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a positive whole number of MiB, not ${SIZE_MIB:?}"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, not ${ROUNDS:?}"
for tool in cargo curl sha256sum awk head date sed; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
nginx=$(command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true)
if [[ -z $nginx ]]; then
    log "installing nginx-light"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y nginx-light >&2 || { apt-get update >&2 && apt-get install -y nginx-light >&2; } ||
        die "could not install nginx-light"
    nginx=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
fi
[[ -f $repo/scripts/bench/nginx.conf.template ]] || die "scripts/bench/nginx.conf.template is missing"
[[ -d $repo/keys-example ]] || die "$repo/keys-example is missing"
size_bytes=$(( SIZE_MIB * 1024 * 1024 ))

# The same build as scripts/bench.sh: the example's dev-dependencies change the features of
# shared crates, so building the binary alone would relink it and every other bench rebuild it.
log "building the release binary (cargo build --release --example bench_fleet --bin patchgate)"
(cd "$repo" && cargo build --release --example bench_fleet --bin patchgate)
[[ -x $bin ]] || die "$bin was not built"

tmp=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/bench-publish.XXXXXX")
server_pid=""
sampler_pid=""
nginx_pid=""

cleanup() {
    local rc=$?
    [[ -n $sampler_pid ]] && stop "$sampler_pid"
    [[ -n $nginx_pid ]] && stop "$nginx_pid"
    [[ -n $server_pid ]] && stop "$server_pid"
    if (( rc != 0 )) && [[ -s $tmp/server.log ]]; then
        printf -- '--- last lines of the server log (%s)\n' "$tmp/server.log" >&2
        tail -n 20 "$tmp/server.log" >&2
    fi
    if [[ $KEEP_TMP == 1 ]]; then
        log "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n ${PORT:-} ]]; then
    port_in_use "$PORT" && die "port $PORT is in use"
    port=$PORT
else
    port=$(free_port)
fi
base=http://127.0.0.1:$port

# --- the test file and the sha256sum reference ---------------------------------------------------
file=$tmp/firmware.bin
log "writing $SIZE_MIB MiB of random data to $file"
head -c "$size_bytes" /dev/urandom >"$file"
cat "$file" >/dev/null # warm-up: both timed reads below come from the page cache

log "timing sha256sum"
t0=$(now)
local_sha=$(sha256sum "$file" | cut -d' ' -f1)
t1=$(now)
sha_secs=$(secs "$t0" "$t1")
sha_mbps=$(mbps "$size_bytes" "$sha_secs")

# --- the server ----------------------------------------------------------------------------------
# Only the settings below: no PATCHGATE_* from the caller's environment (e.g. a Postgres URL), no
# patchgate.toml (the server and CLI run in $tmp).
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PATCHGATE_' || true)
export PATCHGATE_LISTEN=127.0.0.1:$port
# No load balancer to drain for: SIGTERM stops the server at once.
export PATCHGATE_SHUTDOWN_DRAIN_SECONDS=0
export PATCHGATE_DATA_DIR=$tmp/data
export PATCHGATE_KEYS_DIR=$repo/keys-example
export PATCHGATE_MAX_UPLOAD_BYTES=$(( size_bytes + 1024 * 1024 ))

log "starting the server on $base"
(cd "$tmp" && exec "$bin" serve) >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in {1..300}; do
    kill -0 "$server_pid" 2>/dev/null || die "the server exited during start-up"
    curl -sf -o /dev/null "$base/healthz" && break
    sleep 0.1
done
curl -sf -o /dev/null "$base/healthz" || die "the server did not answer $base/healthz within 30 s"
idle_rss_kib=$(status_kib "$server_pid" VmRSS)

# The token is the last line of stdout.
if ! token=$(cd "$tmp" && "$bin" token create --role admin --name bench 2>"$tmp/token.log" | tail -n 1) \
    || [[ -z $token ]]; then
    die "patchgate token create failed: $(cat "$tmp/token.log")"
fi
curl -sSf -o /dev/null -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"bench","hardware_ids":["bench-hw"]}' "$base/api/v1/products"

# --- publish -------------------------------------------------------------------------------------
# VmRSS every 50 ms while the publish runs, as "KiB epoch-seconds" lines (bash builtins only, so
# the sampler takes as little CPU from the server and curl as possible).
sample_rss() {
    local key value _
    while true; do
        while read -r key value _; do
            if [[ $key == VmRSS: ]]; then
                printf '%s %s\n' "$value" "${EPOCHREALTIME:-}"
                break
            fi
        done <"/proc/$server_pid/status" 2>/dev/null || break
        sleep 0.05
    done
}
sample_rss >"$tmp/rss.log" &
sampler_pid=$!

log "publishing $SIZE_MIB MiB"
t0=$(now)
response=$(curl -sSf -H "Authorization: Bearer $token" -F version=1.0.0 -F "file=@$file" \
    "$base/api/v1/products/bench/releases")
t1=$(now)
stop "$sampler_pid"
sampler_pid=""
pub_secs=$(secs "$t0" "$t1")
pub_mbps=$(mbps "$size_bytes" "$pub_secs")
publish_hwm_kib=$(status_kib "$server_pid" VmHWM)
sampled_peak_kib=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$tmp/rss.log")
samples=$(wc -l <"$tmp/rss.log")

pub_sha=$(grep -o '"sha256":"[0-9a-f]\{64\}"' <<<"$response" | head -n 1 | cut -d'"' -f4 || true)
target=$(grep -o '"name":"[^"]*"' <<<"$response" | head -n 1 | cut -d'"' -f4 || true)
[[ -n $pub_sha && -n $target ]] || die "unexpected publish response: $response"
[[ $pub_sha == "$local_sha" ]] || die "WRONG HASH: the server says sha256 $pub_sha, sha256sum says $local_sha"

# --- download ------------------------------------------------------------------------------------
# The target path with the hash before the file name: bench/1.0.0/<sha256>.firmware.bin
url="$base/repo/targets/${target%/*}/$pub_sha.${target##*/}"
log "downloading $url"
t0=$(now)
curl -sSf -o "$tmp/download.bin" "$url"
t1=$(now)
dl_secs=$(secs "$t0" "$t1")
dl_mbps=$(mbps "$size_bytes" "$dl_secs")
dl_sha=$(sha256sum "$tmp/download.bin" | cut -d' ' -f1)
[[ $dl_sha == "$local_sha" ]] || die "WRONG HASH: the download has sha256 $dl_sha, the file $local_sha"

# --- downloads beside nginx ----------------------------------------------------------------------
# nginx serves the very blob file the server stores (a hard link: one inode, one page cache).
blob=$tmp/data/objects/blobs/sha256/$pub_sha
[[ -f $blob ]] || die "the published blob is not at $blob"
ngx=$tmp/nginx
mkdir -p "$ngx/www"
ln "$blob" "$ngx/www/firmware.bin"
ngx_port=$(free_port)
user_line=""
# As root the workers would run as nobody and could not read the private temporary directory.
if (( EUID == 0 )); then user_line="user root;"; fi
sed -e "s|@DIR@|$ngx|g" -e "s|@PORT@|$ngx_port|g" -e "s|@USER@|$user_line|g" \
    "$repo/scripts/bench/nginx.conf.template" >"$ngx/nginx.conf"
"$nginx" -e "$ngx/error.log" -c "$ngx/nginx.conf" -p "$ngx" 2>"$ngx/stderr.log" &
nginx_pid=$!
for _ in {1..100}; do
    curl -sf -o /dev/null "http://127.0.0.1:$ngx_port/firmware.bin" -r 0-0 && break
    sleep 0.1
done
ngx_url=http://127.0.0.1:$ngx_port/firmware.bin
# get_mbps URL N: N curls of the whole of URL at once, to /dev/null; aggregate MB/s.
get_mbps() {
    local url=$1 n=$2 pids=() t0 t1 i
    t0=$(now)
    for (( i = 0; i < n; i++ )); do
        curl -sSf -o /dev/null "$url" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "a download of $url failed"; done
    t1=$(now)
    mbps $(( n * size_bytes )) "$(secs "$t0" "$t1")"
}
log "downloading beside nginx: $ROUNDS rounds of one curl, then 4 at once, alternating"
pg1s=(); ngx1s=(); pg4s=(); ngx4s=(); pairs1=(); pairs4=()
for (( round = 0; round < ROUNDS; round++ )); do
    a=$(get_mbps "$url" 1); b=$(get_mbps "$ngx_url" 1); pg1s+=("$a"); ngx1s+=("$b"); pairs1+=("$a/$b")
    a=$(get_mbps "$url" 4); b=$(get_mbps "$ngx_url" 4); pg4s+=("$a"); ngx4s+=("$b"); pairs4+=("$a/$b")
done
pg1=$(median "${pg1s[@]}"); ngx1=$(median "${ngx1s[@]}"); range1=$(ratio_range "${pairs1[@]}")
pg4=$(median "${pg4s[@]}"); ngx4=$(median "${ngx4s[@]}"); range4=$(ratio_range "${pairs4[@]}")
stop "$nginx_pid"
nginx_pid=""
dl_ratio1=$(awk -v a="$pg1" -v b="$ngx1" 'BEGIN { printf "%.2f", a / b }')
dl_ratio4=$(awk -v a="$pg4" -v b="$ngx4" 'BEGIN { printf "%.2f", a / b }')
final_hwm_kib=$(status_kib "$server_pid" VmHWM)

# --- report --------------------------------------------------------------------------------------
ratio=$(awk -v p="$pub_mbps" -v s="$sha_mbps" 'BEGIN { printf "%.2f", p / s }')
peak_mib=$(kib_to_mib "$final_hwm_kib")

echo
echo "bench-publish: $SIZE_MIB MiB file, $(nproc 2>/dev/null || echo '?') CPUs, sha256 verified on publish and download"
printf '%-40s %18s   %-12s %s\n' "figure" "value" "goal" "result"
printf '%-40s %18s\n' "file size" "$SIZE_MIB MiB"
printf '%-40s %18s\n' "sha256sum (page cache, ${sha_secs} s)" "$sha_mbps MB/s"
printf '%-40s %18s\n' "publish (curl wall clock, ${pub_secs} s)" "$pub_mbps MB/s"
printf '%-40s %18s   %-12s %s\n' "publish / sha256sum" "$ratio" ">= $RATIO_GOAL" "$(verdict "$ratio" '>=' "$RATIO_GOAL")"
printf '%-40s %18s   %-12s %s\n' "server peak RSS (VmHWM, whole run)" "$peak_mib MiB" "< $RSS_GOAL_MIB MiB" "$(verdict "$peak_mib" '<' "$RSS_GOAL_MIB")"
printf '%-40s %18s\n' "download, sha256 checked (${dl_secs} s)" "$dl_mbps MB/s"
printf '%-40s %18s\n' "download, 1 curl: patchgate / nginx" "$pg1 / $ngx1 MB/s"
printf '%-40s %18s\n' "  each round's ratio" "$range1"
printf '%-40s %18s   %-12s %s\n' "  ratio of the medians" "$dl_ratio1" ">= $DOWNLOAD_GOAL" "$(verdict "$dl_ratio1" '>=' "$DOWNLOAD_GOAL")"
printf '%-40s %18s\n' "download, 4 curls: patchgate / nginx" "$pg4 / $ngx4 MB/s"
printf '%-40s %18s\n' "  each round's ratio" "$range4"
printf '%-40s %18s   %-12s %s\n' "  ratio of the medians" "$dl_ratio4" ">= $DOWNLOAD_GOAL" "$(verdict "$dl_ratio4" '>=' "$DOWNLOAD_GOAL")"
echo
echo "server RSS detail: idle before publish $(kib_to_mib "$idle_rss_kib") MiB;" \
    "VmHWM after publish $(kib_to_mib "$publish_hwm_kib") MiB;" \
    "sampled VmRSS peak during publish $(kib_to_mib "$sampled_peak_kib") MiB ($samples samples);" \
    "VmHWM after download $peak_mib MiB"
