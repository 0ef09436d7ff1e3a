#!/usr/bin/env bash
# Benchmark of the device agent (not run in CI). Prints three figures:
#   - the stripped size of the agent built with the size profile   (goal: < 8 MiB)
#   - the agent's peak RSS installing a 256 MiB image, end to end   (goal: < 32 MiB)
#     (report, TUF refresh of both repositories, download, sha256+sha512, slot write)
#   - the fleet simulator's sustained polls per second against one release-built server on
#     this machine (both on the same cores)
# A missed goal is reported as MISS but does not fail the script; a wrong slot does.
#
# Usage:  scripts/bench-agent.sh
# Environment:
#   IMAGE_MIB     image size for the RSS figure (default 256)
#   SIM_DEVICES   simulated devices (default 1000)
#   SIM_SECONDS   simulation length (default 30)
#   SIM_INTERVAL  seconds between a simulated device's polls (default 1)
#   KEEP_TMP=1    keep the temporary directory (server log) for inspection
set -euo pipefail

IMAGE_MIB=${IMAGE_MIB:-256}
SIM_DEVICES=${SIM_DEVICES:-1000}
SIM_SECONDS=${SIM_SECONDS:-30}
SIM_INTERVAL=${SIM_INTERVAL:-1}
KEEP_TMP=${KEEP_TMP:-0}
SIZE_GOAL_MIB=8
RSS_GOAL_MIB=32

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
server_bin=$target_dir/release/patchgate
agent_bin=$target_dir/agent/patchgate-agent

BENCH_NAME=bench-agent
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v < g) ? "PASS" : "MISS" }'; }
for tool in cargo curl sha256sum awk head /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

log "building the server (release) and the agent (size profile)"
(cd "$repo" && cargo build --release --bin patchgate && cargo build -p patchgate-agent --bin patchgate-agent --profile agent)
size_bytes=$(stat -c %s "$agent_bin")
size_mib=$(awk -v b="$size_bytes" 'BEGIN { printf "%.2f", b / 1048576 }')

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-agent.XXXXXX")
server_pid=""
cleanup() {
    local rc=$?
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if (( rc != 0 )) && [[ -s $tmp/server.log ]]; then tail -n 20 "$tmp/server.log" >&2; fi
    if [[ $KEEP_TMP == 1 ]]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

port=$(free_port)
base=http://127.0.0.1:$port

while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PATCHGATE_' || true)
export PATCHGATE_LISTEN=127.0.0.1:$port
# No load balancer to drain for: SIGTERM stops the server at once.
export PATCHGATE_SHUTDOWN_DRAIN_SECONDS=0
export PATCHGATE_DATA_DIR=$tmp/data
export PATCHGATE_KEYS_DIR=$repo/keys-example
export PATCHGATE_MAX_UPLOAD_BYTES=$(( (IMAGE_MIB + 1) * 1048576 ))
log "starting the server on $base"
(cd "$tmp" && exec "$server_bin" serve) >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in {1..300}; do
    kill -0 "$server_pid" 2>/dev/null || die "the server exited during start-up"
    curl -sf -o /dev/null "$base/healthz" && break
    sleep 0.1
done
token=$(cd "$tmp" && "$server_bin" token create --role admin --name bench 2>/dev/null | tail -n 1)
api() { curl -sSf -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
curl -sSf -o "$tmp/image-root.json" "$base/repo/metadata/1.root.json"
curl -sSf -o "$tmp/director-root.json" "$base/director/metadata/1.root.json"

# prepare PRODUCT IMAGE_FILE DEVICES: product, cohort "all", enrollment token (printed), 100 % rollout.
prepare() {
    local product=$1 file=$2 devices=$3
    api -o /dev/null -d "{\"name\":\"$product\",\"hardware_ids\":[\"$product-hw\"]}" "$base/api/v1/products"
    api -o /dev/null -d "{\"name\":\"all\",\"product\":\"$product\",\"selector\":{\"tags\":[\"bench:$product\"]}}" "$base/api/v1/cohorts"
    curl -sSf -o /dev/null -H "Authorization: Bearer $token" -F version=1.0.0 -F "file=@$file" \
        "$base/api/v1/products/$product/releases"
    api -o /dev/null -d "{\"id\":\"r-$product\",\"product\":\"$product\",\"version\":\"1.0.0\",\"stages\":[{\"cohort\":\"all\",\"percent\":100,\"soak_minutes\":0}],\"gate\":{\"max_failure_rate\":0.5,\"min_reports\":1,\"stall_minutes\":1440}}" "$base/api/v1/rollouts"
    api -o /dev/null -X POST "$base/api/v1/rollouts/r-$product/start"
    api -d "{\"product\":\"$product\",\"tags\":[\"bench:$product\"],\"max_uses\":$devices}" "$base/api/v1/enrollment-tokens" |
        grep -o '"token":"[^"]*"' | cut -d'"' -f4
}

# --- peak RSS installing a large image -------------------------------------------------------------
log "publishing a $IMAGE_MIB MiB image"
head -c $(( IMAGE_MIB * 1048576 )) /dev/urandom >"$tmp/big.bin"
big_token=$(prepare big "$tmp/big.bin" 1)
"$agent_bin" enroll --server "$base" --enrollment-token "$big_token" --device-id bench-0001 --product big \
    --hardware-id big-hw --image-root "$tmp/image-root.json" --director-root "$tmp/director-root.json" \
    --state-dir "$tmp/agent" --allow-dev-keys >/dev/null
log "installing it with the agent"
/usr/bin/time -f '%M %e' -o "$tmp/time.txt" "$agent_bin" install --state-dir "$tmp/agent" --slot "$tmp/slot.bin" >"$tmp/install.json"
read -r rss_kib install_secs <"$tmp/time.txt"
[[ $(sha256sum <"$tmp/slot.bin" | cut -d' ' -f1) == $(sha256sum <"$tmp/big.bin" | cut -d' ' -f1) ]] ||
    die "WRONG SLOT: the installed image differs from the published one"
rss_mib=$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')
rm -f "$tmp/big.bin" "$tmp/slot.bin"

# --- simulator throughput --------------------------------------------------------------------------
head -c 65536 /dev/urandom >"$tmp/small.bin"
sim_token=$(prepare sim "$tmp/small.bin" "$SIM_DEVICES")
log "simulating $SIM_DEVICES devices for $SIM_SECONDS s (one poll every $SIM_INTERVAL s each)"
"$agent_bin" simulate --server "$base" --enrollment-token "$sim_token" --image-root "$tmp/image-root.json" \
    --director-root "$tmp/director-root.json" --devices "$SIM_DEVICES" --product sim --hardware-id sim-hw \
    --interval "$SIM_INTERVAL" --duration "$SIM_SECONDS" --allow-dev-keys >"$tmp/sim.txt" 2>"$tmp/sim.log"
cat "$tmp/sim.txt"
pps=$(awk 'NR == 2 { print $NF }' "$tmp/sim.txt")

echo
echo "bench-agent: $(nproc) CPUs; server and agent release-built on this machine"
printf '%-58s %14s   %-10s %s\n' "figure" "value" "goal" "result"
printf '%-58s %14s   %-10s %s\n' "agent binary, stripped (--profile agent)" "$size_mib MiB" "< $SIZE_GOAL_MIB MiB" "$(verdict "$size_mib" $SIZE_GOAL_MIB)"
printf '%-58s %14s   %-10s %s\n' "agent peak RSS installing $IMAGE_MIB MiB (${install_secs} s)" "$rss_mib MiB" "< $RSS_GOAL_MIB MiB" "$(verdict "$rss_mib" $RSS_GOAL_MIB)"
printf '%-58s %14s\n' "simulator: $SIM_DEVICES devices, sustained polls/s" "$pps"
