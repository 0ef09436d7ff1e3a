#!/usr/bin/env bash
# Fleet-scale benchmark of one release-built server process (not run in CI).
#
# Builds `patchgate` and examples/bench_fleet.rs (release) once, then for SQLite and, unless
# BENCH_POSTGRES is "", for PostgreSQL (a fresh database, dropped afterwards):
#   1. starts `target/release/patchgate serve` on a free loopback port with a temporary data
#      directory and a copy of keys-example (RUST_LOG=warn; the refresh and rollout jobs off, so
#      nothing but the measured requests runs), and creates an admin token with
#      `patchgate token create`;
#   2. `bench_fleet setup` (HTTP only): product pump-x1 and release 1.0.0, an enrollment token,
#      DEVICES enrollments, CONCURRENCY at a time (enrollment/s), every device's first report,
#      and the data files for wrk: ROUNDS pre-signed reports per device and each director
#      timestamp's ETag;
#   3. wrk (THREADS threads, CONNECTIONS connections, DURATION, --latency):
#        - unchanged signed reports (200), scripts/bench/reports.lua;
#        - director timestamp with If-None-Match of its ETag (304), scripts/bench/director304.lua;
#        - image repository GET /repo/metadata/timestamp.json (200), plain wrk;
#        - anchor: nginx (scripts/bench/nginx.conf.template) serving a copy of that file, plain
#          GET (200) and, through director304.lua, a GET with If-None-Match of its ETag (304);
#      wrk runs with --timeout 10s so that slow answers still count in the latency figures;
#   4. `bench_fleet first-report`: a 100 % rollout of 1.0.0 to every device starts, then every
#      device sends one signed report, CONCURRENCY at a time (reports/s, p50, p99; all must say
#      changed);
#   5. reads the server's VmRSS and VmHWM, and how much of the RSS is anonymous memory (heap,
#      stacks) and how much mapped files (the binary, libraries, SQLite's shared memory).
#   While the unchanged reports and the first reports run, it also reads the CPU they cost: the
#   server's, PostgreSQL's and the whole machine's (the rest is the load generator and
#   interrupts), and how busy the cores were; for the first reports, also the rate that fully busy
#   cores would allow at the measured cost a report. That says whether the cores bound a figure.
# Then prints one Markdown table per backend with the goals: reports >= 17 000/s on SQLite and
# >= 10 000/s on PostgreSQL with p99 <= 50 ms, director 304 and image GET >= 0.5 x nginx, first
# reports >= 5 000/s, enrollment >= 3 000/s. A missed goal is reported as MISS but does not fail
# the script; a broken run (the server died, (nearly) every answer had the wrong status, a first
# report was refused) does.
#
# wrk, nginx and the server share the machine's cores: the figures are for this machine, and
# the nginx anchor says how much of it a minimal static HTTP server gets under the same load.
#
# Usage:  scripts/bench.sh
# Environment:
#   DEVICES         enrolled devices (default 10000)
#   DURATION        length of each wrk run, as wrk takes it: 10s, 1m (default 10s)
#   CONNECTIONS     wrk connections (default 64)
#   THREADS         wrk threads (default 2)
#   ROUNDS          pre-signed reports per device (default enough for DURATION at 20 000
#                   reports/s: ceil(seconds * 20000 / DEVICES) + 2)
#   CONCURRENCY     requests in flight for enrollment and first reports (default 64)
#   BENCH_POSTGRES  admin URL of a PostgreSQL server (default
#                   postgres://postgres@127.0.0.1:5432/test, by TCP, with TLS when the server
#                   offers it; postgres://postgres@localhost/test?host=/var/run/postgresql
#                   through its socket; "" skips PostgreSQL)
#   BENCH_NO_SQLITE=1  skip the SQLite run (PostgreSQL only)
#   BENCH_TMPDIR    where to create the temporary directory (default $TMPDIR or /tmp)
#   KEEP_TMP=1      keep the temporary directory (server and nginx logs, wrk output, data files)
#   BENCH_BIN       the server binary to measure (default target/release/patchgate, built
#                   first): an A/B runs a copy of the other build beside it in the same hour;
#                   with BENCH_FLEET too, nothing is built (an A/B run does not rebuild the
#                   working tree's sources while it measures copies)
#   BENCH_FLEET     the bench_fleet binary (default target/release/examples/bench_fleet, built
#                   first): keep the load generator the same while BENCH_BIN changes
#   BENCH_PERF=1    record the server (and, on PostgreSQL, its processes) with `perf record -g`
#                   during each wrk run, the set-up (enrollments) and the first reports into
#                   $dir/perf-NAME.data (implies KEEP_TMP=1; read with `perf report -i FILE`)
#   BENCH_HSM       where the online keys (image snapshot and timestamp, director) are:
#                   "" in files (default); "softhsm" in a SoftHSM token, signing through
#                   PKCS#11; "delay:MS" the same through scripts/bench/pkcs11_delay.c, which
#                   adds MS milliseconds to every signature, as a slower HSM would
#   BENCH_HSM_SESSIONS  with BENCH_HSM, the server's pkcs11_sessions (default: the server's)
set -euo pipefail

DEVICES=${DEVICES:-10000}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
CONCURRENCY=${CONCURRENCY:-64}
BENCH_POSTGRES=${BENCH_POSTGRES-postgres://postgres@127.0.0.1:5432/test}
BENCH_PERF=${BENCH_PERF:-0}
KEEP_TMP=${KEEP_TMP:-$BENCH_PERF}
# Counter of the first report after the stage opens: far above any counter wrk used.
FIRST_REPORT_COUNTER=1000000

REPORTS_GOAL_SQLITE=17000
REPORTS_GOAL_POSTGRES=10000
P99_GOAL_MS=50
RATIO_GOAL=0.5
FIRST_REPORTS_GOAL=5000
ENROLL_GOAL=3000

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench_dir=$repo/scripts/bench
bin=${BENCH_BIN:-$repo/target/release/patchgate}
fleet=${BENCH_FLEET:-$repo/target/release/examples/bench_fleet}

BENCH_NAME=bench
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
# verdict VALUE OP GOAL -> PASS | MISS (OP is >= or <=)
verdict() { awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? (v + 0 >= g + 0) : (v + 0 <= g + 0); print ok ? "PASS" : "MISS" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "0" }'; }
# kv FILE KEY: the value of the last KEY=value line of FILE.
kv() { awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print v }' "$1"; }
# to_ms "1.23ms" | "456.00us" | "1.50s" | "2.00m" -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.2f", v * 60000 }
        else if (v ~ /h$/) { sub(/h$/, "", v); printf "%.2f", v * 3600000 }
        else print "nan" }'
}

# --- knobs -----------------------------------------------------------------------------------------
for knob in DEVICES CONNECTIONS THREADS CONCURRENCY; do
    is_count "${!knob}" || die "$knob must be a positive whole number, not ${!knob:?}"
done
if [[ $DURATION =~ ^([1-9][0-9]*)(s?)$ ]]; then
    duration_secs=${BASH_REMATCH[1]}
elif [[ $DURATION =~ ^([1-9][0-9]*)m$ ]]; then
    duration_secs=$(( BASH_REMATCH[1] * 60 ))
elif [[ $DURATION =~ ^([1-9][0-9]*)h$ ]]; then
    duration_secs=$(( BASH_REMATCH[1] * 3600 ))
else
    die "DURATION must look like 10s, 2m or 1h, not $DURATION"
fi
(( THREADS <= CONNECTIONS )) || die "THREADS ($THREADS) must not exceed CONNECTIONS ($CONNECTIONS)"
# One device must never have two reports in flight: each wrk thread walks its devices
# round-robin, so it needs many more devices than connections.
(( DEVICES >= 2 * CONNECTIONS )) || die "DEVICES ($DEVICES) must be at least 2 x CONNECTIONS ($CONNECTIONS)"
ROUNDS=${ROUNDS:-$(( (duration_secs * 20000 + DEVICES - 1) / DEVICES + 2 ))}
is_count "$ROUNDS" || die "ROUNDS must be a positive whole number, not $ROUNDS"
(( ROUNDS + 2 < FIRST_REPORT_COUNTER )) || die "ROUNDS ($ROUNDS) must stay below $FIRST_REPORT_COUNTER"

# --- tools -----------------------------------------------------------------------------------------
for tool in cargo curl awk sed git; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
nginx_bin() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[[ -n $(nginx_bin) ]] || missing+=(nginx-light)
if (( ${#missing[@]} > 0 )); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${missing[@]}" >&2 || { apt-get update >&2 && apt-get install -y "${missing[@]}" >&2; } ||
        die "could not install ${missing[*]}"
fi
wrk=$(command -v wrk) || die "wrk is missing"
nginx=$(nginx_bin)
[[ -n $nginx ]] || die "nginx is missing"
for file in reports.lua director304.lua nginx.conf.template; do
    [[ -f $bench_dir/$file ]] || die "$bench_dir/$file is missing"
done
[[ -d $repo/keys-example ]] || die "$repo/keys-example is missing"

if [[ -n ${BENCH_BIN:-} && -n ${BENCH_FLEET:-} ]]; then
    log "measuring $bin with $fleet (BENCH_BIN and BENCH_FLEET given: nothing is built)"
else
    log "building the release binary and the bench_fleet example"
    (cd "$repo" && cargo build --release --example bench_fleet --bin patchgate)
fi
[[ -x $bin && -x $fleet ]] || die "$bin or $fleet was not built"

tmp=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/bench-fleet.XXXXXX")
server_pid=""
nginx_pid=""
pg_admin=""
pg_name=""
server_log=""

drop_database() {
    [[ -n $pg_name ]] || return 0
    psql "$pg_admin" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS $pg_name WITH (FORCE)" >/dev/null ||
        printf 'bench: could not drop database %s\n' "$pg_name" >&2
    pg_name=""
}

cleanup() {
    local rc=$?
    [[ -n $nginx_pid ]] && stop "$nginx_pid"
    [[ -n $server_pid ]] && stop "$server_pid"
    drop_database
    if (( rc != 0 )) && [[ -n $server_log && -s $server_log ]]; then
        printf -- '--- last lines of the server log (%s)\n' "$server_log" >&2
        tail -n 20 "$server_log" >&2
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

server_alive() { [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; }
# cpu_ticks PID...: user + system CPU of these processes so far, in clock ticks (vanished ones count 0).
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# postgres_pids: every PostgreSQL server process on this machine (none without PostgreSQL).
postgres_pids() { pgrep -x postgres || true; }
# cpu_seconds TICKS: clock ticks as seconds.
cpu_seconds() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }
# machine_busy_ticks: CPU time of the whole machine so far, every core, every state but idle and
# I/O wait, in clock ticks (/proc/stat; guest time is already in user).
machine_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# busy_share TICKS SECONDS: TICKS as a percentage of every core's time over SECONDS.
busy_share() {
    awk -v t="$1" -v s="$2" -v n="$(nproc)" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (s + 0 > 0) printf "%.0f", 100 * t / hz / (n * s); else print "?" }'
}
# cpu_ceiling TICKS COUNT: what COUNT requests that together cost TICKS of the machine's CPU
# cost each, and the rate every core, fully busy, would then allow.
cpu_ceiling() {
    awk -v t="$1" -v c="$2" -v n="$(nproc)" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        if (t + 0 > 0 && c + 0 > 0) printf "%.2f ms of the machine'"'"'s CPU a report: its %d cores, fully busy, would answer at most %.0f/s", 1000 * t / hz / c, n, n * c * hz / t
        else print "no CPU figure"
    }'
}

# run_wrk NAME URL [wrk options and script arguments...]: wrk's output in $dir/wrk-NAME.txt.
run_wrk() {
    local name=$1 url=$2
    shift 2
    local args=() script_args=() seen_sep=0
    for a in "$@"; do
        if [[ $a == -- ]]; then seen_sep=1; elif (( seen_sep )); then script_args+=("$a"); else args+=("$a"); fi
    done
    local cmd=("$wrk" -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency --timeout 10s "${args[@]}" "$url")
    if (( ${#script_args[@]} > 0 )); then cmd+=(-- "${script_args[@]}"); fi
    log "wrk: $name ($THREADS threads, $CONNECTIONS connections, $DURATION)"
    perf_start "$name"
    "${cmd[@]}" >"$dir/wrk-$name.txt" 2>&1 || die "wrk $name failed: $(tail -n 5 "$dir/wrk-$name.txt")"
    perf_stop
    sed 's/^/    /' "$dir/wrk-$name.txt" >&2
}

# perf_start NAME / perf_stop: with BENCH_PERF=1, record the server in between into
# $dir/perf-NAME.data; on PostgreSQL, its processes too (`perf report --comm postgres`): those
# running when recording starts, as `perf record -p` does not follow processes started later.
perf_pid=""
perf_file=""
perf_start() {
    [[ $BENCH_PERF == 1 ]] && server_alive || return 0
    perf_file=$dir/perf-$1.data
    local pids=$server_pid
    if [[ ${backend:-} == PostgreSQL ]]; then pids+=$(postgres_pids | sed 's/^/,/' | tr -d '\n'); fi
    perf record -q -F 499 -g -p "$pids" -o "$perf_file" >/dev/null 2>&1 &
    perf_pid=$!
}
perf_stop() {
    [[ -n $perf_pid ]] || return 0
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf_pid=""
    log "perf: $perf_file"
}

# wrk_figures NAME: sets rps, p50, p99, requests, wrong (answers with another status than the
# expected one: counted by the Lua scripts; plain wrk counts only statuses >= 400), socket (socket
# errors) and exhausted (wrk threads out of pre-signed reports) from $dir/wrk-NAME.txt; dies on a
# broken run (the server died, no answer, at least half the answers with the wrong status).
wrk_figures() {
    local name=$1 file=$dir/wrk-$1.txt
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$file")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$file")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$file")")
    requests=$(awk '/ requests in / { print $1 }' "$file")
    socket=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$file")
    socket=${socket:-0}
    exhausted=$(awk '$1 == "bench:" && $2 == "exhausted" { print $3 }' "$file")
    exhausted=${exhausted:-0}
    # The Lua scripts count answers other than the expected status; plain wrk counts >= 400.
    wrong=$(awk '$1 == "bench:" && $2 == "unexpected" { print $3 }' "$file")
    [[ -n $wrong ]] || wrong=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$file")
    wrong=${wrong:-0}
    [[ -n $rps && -n $requests ]] || die "could not read wrk's output for $name ($file)"
    if [[ $name != nginx-* ]] && ! server_alive; then die "the server died during $name"; fi
    (( requests > 0 )) || die "$name: no request was answered"
    (( wrong * 2 < requests )) || die "$name: $wrong of $requests answers had the wrong status: $(grep '^bench: status' "$file" | tr '\n' ' ')"
}

# --- machine ---------------------------------------------------------------------------------------
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit="$commit (with uncommitted changes)"
fi
machine="$(nproc) CPUs ($cpu_model), $mem_gib GiB RAM"
tables=()

# hsm_setup DIR: with BENCH_HSM, a SoftHSM token in DIR/softhsm holding the three online keys
# (made by the measured binary's `keys new --pkcs11`), their files gone from DIR/keys/online,
# and the server pointed at the token through DIR/hsm.toml.
hsm_setup() {
    local dir=$1 module=/usr/lib/softhsm/libsofthsm2.so role uri
    [[ -n ${BENCH_HSM:-} ]] || return 0
    bash "$repo/scripts/ensure-softhsm.sh" >/dev/null
    mkdir -p "$dir/softhsm/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir/softhsm/tokens" \
        >"$dir/softhsm/softhsm2.conf"
    export SOFTHSM2_CONF=$dir/softhsm/softhsm2.conf
    softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 123456 >/dev/null
    printf '1234\n' >"$dir/softhsm/pin"
    case $BENCH_HSM in
        softhsm) ;;
        delay:*)
            local ms=${BENCH_HSM#delay:}
            [[ $ms =~ ^[0-9]+$ ]] || die "BENCH_HSM=delay:MS needs whole milliseconds, not $ms"
            [[ -f /usr/include/p11-kit-1/p11-kit/pkcs11.h ]] || apt-get install -y -qq libp11-kit-dev >/dev/null
            gcc -shared -fPIC -O2 -I/usr/include/p11-kit-1 -o "$dir/softhsm/delay.so" "$bench_dir/pkcs11_delay.c" -ldl
            export PKCS11_DELAY_MODULE=$module PKCS11_DELAY_US=$((ms * 1000))
            module=$dir/softhsm/delay.so
            ;;
        *) die "BENCH_HSM must be empty, softhsm or delay:MS, not $BENCH_HSM" ;;
    esac
    : >"$dir/hsm.toml"
    if [[ -n ${BENCH_HSM_SESSIONS:-} ]]; then echo "pkcs11_sessions = $BENCH_HSM_SESSIONS" >>"$dir/hsm.toml"; fi
    echo "[pkcs11_keys]" >>"$dir/hsm.toml"
    for role in image-snapshot image-timestamp director; do
        uri="pkcs11:token=bench;object=$role?module-path=$module&pin-source=$dir/softhsm/pin"
        "$bin" keys new --pkcs11 "$uri" >/dev/null
        rm "$dir/keys/online/$role.pem"
        printf '%s = "%s"\n' "$role" "$uri" >>"$dir/hsm.toml"
    done
    export PATCHGATE_CONFIG=$dir/hsm.toml
    log "online keys in SoftHSM (BENCH_HSM=$BENCH_HSM, sessions ${BENCH_HSM_SESSIONS:-default})"
}

# --- one backend -----------------------------------------------------------------------------------
# run_backend NAME DATABASE_URL ("" for SQLite in the data directory)
run_backend() {
    local backend=$1 database_url=$2
    dir=$tmp/$backend
    mkdir -p "$dir"
    cp -r "$repo/keys-example" "$dir/keys"
    local port base
    port=$(free_port)
    base=http://127.0.0.1:$port

    # Only the settings below: no PATCHGATE_* from the caller's environment, no patchgate.toml
    # (the server and the CLI run in $dir).
    while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PATCHGATE_' || true)
    export PATCHGATE_LISTEN=127.0.0.1:$port
    # No load balancer to drain for: SIGTERM stops the server at once.
    export PATCHGATE_SHUTDOWN_DRAIN_SECONDS=0
    export PATCHGATE_DATA_DIR=$dir/data
    export PATCHGATE_KEYS_DIR=$dir/keys
    export PATCHGATE_REFRESH_INTERVAL_SECONDS=0
    export PATCHGATE_ROLLOUT_INTERVAL_SECONDS=0
    if [[ -n $database_url ]]; then export PATCHGATE_DATABASE_URL=$database_url; fi
    export RUST_LOG=warn
    hsm_setup "$dir"

    log "$backend: starting the server on $base"
    server_log=$dir/server.log
    (cd "$dir" && exec "$bin" serve) >"$server_log" 2>&1 &
    server_pid=$!
    for _ in {1..300}; do
        server_alive || die "the server exited during start-up"
        curl -sf --noproxy '*' -o /dev/null "$base/healthz" && break
        sleep 0.1
    done
    curl -sf --noproxy '*' -o /dev/null "$base/healthz" || die "the server did not answer $base/healthz within 30 s"

    # The token is the last line of stdout.
    local token
    if ! token=$(cd "$dir" && "$bin" token create --role admin --name bench 2>"$dir/token.log" | tail -n 1) \
        || [[ -z $token ]]; then
        die "patchgate token create failed: $(cat "$dir/token.log")"
    fi

    # --- set-up, enrollment, data files --------------------------------------------------------
    perf_start setup
    BENCH_URL=$base BENCH_TOKEN=$token BENCH_OUT=$dir DEVICES=$DEVICES ROUNDS=$ROUNDS CONCURRENCY=$CONCURRENCY \
        "$fleet" setup >"$dir/setup.out" || die "bench_fleet setup failed"
    perf_stop
    local enroll_rps enroll_p50 enroll_p99
    enroll_rps=$(kv "$dir/setup.out" enroll_per_sec)
    enroll_p50=$(kv "$dir/setup.out" enroll_p50_ms)
    enroll_p99=$(kv "$dir/setup.out" enroll_p99_ms)
    [[ -n $enroll_rps ]] || die "bench_fleet setup printed no enrollment rate"
    server_alive || die "the server died during the set-up"

    # --- wrk: reports, director 304, image timestamp -------------------------------------------
    local rep_rps rep_p50 rep_p99 rep_req rep_wrong rep_socket rep_exhausted
    local pg_pids=() rep_server_ticks rep_pg_ticks rep_busy_ticks rep_started rep_seconds
    if [[ $backend == PostgreSQL ]]; then mapfile -t pg_pids < <(postgres_pids); fi
    rep_server_ticks=$(cpu_ticks "$server_pid")
    rep_pg_ticks=$(cpu_ticks "${pg_pids[@]}")
    rep_busy_ticks=$(machine_busy_ticks)
    rep_started=$(date +%s.%N)
    run_wrk reports "$base" -s "$bench_dir/reports.lua" -- "$dir/reports.tsv" "$THREADS"
    rep_busy_ticks=$(( $(machine_busy_ticks) - rep_busy_ticks ))
    rep_seconds=$(awk -v a="$rep_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    rep_server_ticks=$(( $(cpu_ticks "$server_pid") - rep_server_ticks ))
    rep_pg_ticks=$(( $(cpu_ticks "${pg_pids[@]}") - rep_pg_ticks ))
    wrk_figures reports
    local rep_cpu="server $(cpu_seconds "$rep_server_ticks") s"
    if [[ $backend == PostgreSQL ]]; then rep_cpu+=", PostgreSQL $(cpu_seconds "$rep_pg_ticks") s"; fi
    rep_cpu+=", the rest of the machine (wrk, interrupts) $(cpu_seconds $(( rep_busy_ticks - rep_server_ticks - rep_pg_ticks ))) s;"
    rep_cpu+=" cores busy $(busy_share "$rep_busy_ticks" "$rep_seconds") % over $rep_seconds s"
    rep_rps=$rps rep_p50=$p50 rep_p99=$p99 rep_req=$requests rep_wrong=$wrong rep_socket=$socket rep_exhausted=$exhausted
    sleep 1

    local dir_rps dir_p50 dir_p99 dir_req dir_wrong dir_socket
    run_wrk director304 "$base" -s "$bench_dir/director304.lua" -- "$dir/director.tsv" "$THREADS" 304
    wrk_figures director304
    dir_rps=$rps dir_p50=$p50 dir_p99=$p99 dir_req=$requests dir_wrong=$wrong dir_socket=$socket
    sleep 1

    local ts_code
    ts_code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "$base/repo/metadata/timestamp.json")
    [[ $ts_code == 200 ]] || die "GET /repo/metadata/timestamp.json answered $ts_code, not 200"
    local img_rps img_p50 img_p99 img_req img_wrong img_socket
    run_wrk image "$base/repo/metadata/timestamp.json"
    wrk_figures image
    img_rps=$rps img_p50=$p50 img_p99=$p99 img_req=$requests img_wrong=$wrong img_socket=$socket
    sleep 1

    # --- anchor: nginx serving a copy of timestamp.json ------------------------------------------
    local ngx=$dir/nginx ngx_port ngx_base ngx_etag code user_line=""
    mkdir -p "$ngx/www/repo/metadata"
    curl -sSf --noproxy '*' -o "$ngx/www/repo/metadata/timestamp.json" "$base/repo/metadata/timestamp.json"
    ngx_port=$(free_port)
    ngx_base=http://127.0.0.1:$ngx_port
    # As root the workers would run as nobody and could not read the private temporary directory.
    if (( EUID == 0 )); then user_line="user root;"; fi
    sed -e "s|@DIR@|$ngx|g" -e "s|@PORT@|$ngx_port|g" -e "s|@USER@|$user_line|g" \
        "$bench_dir/nginx.conf.template" >"$ngx/nginx.conf"
    "$nginx" -t -q -e "$ngx/error.log" -c "$ngx/nginx.conf" -p "$ngx" 2>"$ngx/stderr.log" ||
        die "nginx refused its configuration: $(tail -n 5 "$ngx/stderr.log")"
    "$nginx" -e "$ngx/error.log" -c "$ngx/nginx.conf" -p "$ngx" 2>"$ngx/stderr.log" &
    nginx_pid=$!
    for _ in {1..100}; do
        kill -0 "$nginx_pid" 2>/dev/null || die "nginx exited during start-up: $(tail -n 5 "$ngx/stderr.log" "$ngx/error.log")"
        curl -sf --noproxy '*' -o /dev/null "$ngx_base/repo/metadata/timestamp.json" && break
        sleep 0.1
    done
    ngx_etag=$(curl -sSf --noproxy '*' -D - -o /dev/null "$ngx_base/repo/metadata/timestamp.json" |
        awk 'tolower($1) == "etag:" { sub(/\r$/, ""); print $2 }')
    [[ -n $ngx_etag ]] || die "nginx sent no ETag"
    code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' -H "If-None-Match: $ngx_etag" \
        "$ngx_base/repo/metadata/timestamp.json")
    [[ $code == 304 ]] || die "nginx answered $code, not 304, to If-None-Match: $ngx_etag"
    # Same Lua script as the director run, so both pay the same per-request cost in wrk.
    for (( t = 0; t < THREADS; t++ )); do
        printf '%d\t/repo/metadata/timestamp.json\tpgd_nginx-anchor\t%s\n' "$t" "$ngx_etag"
    done >"$dir/nginx.tsv"

    local n200_rps n200_p50 n200_p99 n304_rps n304_p50 n304_p99
    run_wrk nginx-200 "$ngx_base/repo/metadata/timestamp.json"
    wrk_figures nginx-200
    n200_rps=$rps n200_p50=$p50 n200_p99=$p99
    sleep 1
    run_wrk nginx-304 "$ngx_base" -s "$bench_dir/director304.lua" -- "$dir/nginx.tsv" "$THREADS" 304
    wrk_figures nginx-304
    n304_rps=$rps n304_p50=$p50 n304_p99=$p99
    stop "$nginx_pid"
    nginx_pid=""
    sleep 1

    # --- first report after a 100 % stage opens --------------------------------------------------
    perf_start first-report
    local server_ticks pg_ticks
    if [[ $backend == PostgreSQL ]]; then mapfile -t pg_pids < <(postgres_pids); fi
    server_ticks=$(cpu_ticks "$server_pid")
    pg_ticks=$(cpu_ticks "${pg_pids[@]}")
    BENCH_URL=$base BENCH_TOKEN=$token BENCH_OUT=$dir CONCURRENCY=$CONCURRENCY COUNTER=$FIRST_REPORT_COUNTER \
        "$fleet" first-report >"$dir/first-report.out" || die "bench_fleet first-report failed"
    perf_stop
    server_ticks=$(( $(cpu_ticks "$server_pid") - server_ticks ))
    pg_ticks=$(( $(cpu_ticks "${pg_pids[@]}") - pg_ticks ))
    local first_cpu
    first_cpu="server $(cpu_seconds "$server_ticks") s"
    if [[ $backend == PostgreSQL ]]; then first_cpu+=", PostgreSQL $(cpu_seconds "$pg_ticks") s"; fi
    local first_rps first_p50 first_p99 first_count first_client first_busy first_seconds
    first_rps=$(kv "$dir/first-report.out" first_report_per_sec)
    first_p50=$(kv "$dir/first-report.out" first_report_p50_ms)
    first_p99=$(kv "$dir/first-report.out" first_report_p99_ms)
    first_count=$(kv "$dir/first-report.out" first_report_count)
    first_seconds=$(kv "$dir/first-report.out" first_report_seconds)
    first_client=$(kv "$dir/first-report.out" first_report_client_ticks)
    first_busy=$(kv "$dir/first-report.out" first_report_machine_busy_ticks)
    [[ -n $first_rps ]] || die "bench_fleet first-report printed no rate"
    # The whole machine's CPU while the reports were sent (bench_fleet reads it around them):
    # whether the cores were the limit, and the rate they would allow at this cost per report.
    if [[ -n $first_busy ]]; then
        first_cpu+=", bench_fleet $(cpu_seconds "$first_client") s; cores busy $(busy_share "$first_busy" "$first_seconds") %"
        first_cpu+=" over $first_seconds s; $(cpu_ceiling "$first_busy" "$first_count")"
    fi
    server_alive || die "the server died during the first reports"

    # --- memory, then stop ------------------------------------------------------------------------
    local rss_kib hwm_kib anon_kib file_kib
    rss_kib=$(status_kib "$server_pid" VmRSS)
    hwm_kib=$(status_kib "$server_pid" VmHWM)
    anon_kib=$(status_kib "$server_pid" RssAnon)
    file_kib=$(status_kib "$server_pid" RssFile)
    stop "$server_pid"
    server_pid=""
    unset PATCHGATE_DATABASE_URL

    # --- table ------------------------------------------------------------------------------------
    local reports_goal rep_result dir_ratio img_ratio
    if [[ $backend == PostgreSQL ]]; then reports_goal=$REPORTS_GOAL_POSTGRES; else reports_goal=$REPORTS_GOAL_SQLITE; fi
    local misses=()
    [[ $(verdict "$rep_rps" '>=' "$reports_goal") == PASS ]] || misses+=("rate")
    [[ $(verdict "$rep_p99" '<=' "$P99_GOAL_MS") == PASS ]] || misses+=("p99")
    if (( rep_exhausted > 0 )); then
        rep_result="INVALID: out of pre-signed reports, raise ROUNDS"
    elif (( ${#misses[@]} == 0 )); then
        rep_result=PASS
    else
        local joined
        joined=$(printf '%s, ' "${misses[@]}")
        rep_result="MISS (${joined%, })"
    fi
    dir_ratio=$(ratio "$dir_rps" "$n304_rps")
    img_ratio=$(ratio "$img_rps" "$n200_rps")
    local table
    table=$(
        echo "### $backend: $DEVICES devices; wrk $THREADS threads, $CONNECTIONS connections, $DURATION per run; online keys ${BENCH_HSM:-in files}${BENCH_HSM:+, ${BENCH_HSM_SESSIONS:-8} sessions}"
        echo
        echo "| figure | patchgate | nginx anchor | ratio | p50 | p99 | wrong status | goal | result |"
        echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
        echo "| unchanged signed reports/s | $rep_rps | — | — | $rep_p50 ms | $rep_p99 ms | $rep_wrong of $rep_req | ≥ $reports_goal/s, p99 ≤ $P99_GOAL_MS ms | $rep_result |"
        echo "| director timestamp 304/s (If-None-Match) | $dir_rps | $n304_rps (304) | $dir_ratio | $dir_p50 ms | $dir_p99 ms | $dir_wrong of $dir_req | ratio ≥ $RATIO_GOAL | $(verdict "$dir_ratio" '>=' "$RATIO_GOAL") |"
        echo "| image timestamp.json GET/s | $img_rps | $n200_rps (200) | $img_ratio | $img_p50 ms | $img_p99 ms | $img_wrong of $img_req | ratio ≥ $RATIO_GOAL | $(verdict "$img_ratio" '>=' "$RATIO_GOAL") |"
        echo "| first report after a 100 % stage opens/s | $(printf '%.0f' "$first_rps") | — | — | $first_p50 ms | $first_p99 ms | 0 of $first_count | ≥ $FIRST_REPORTS_GOAL/s | $(verdict "$first_rps" '>=' "$FIRST_REPORTS_GOAL") |"
        echo "| enrollment/s | $(printf '%.0f' "$enroll_rps") | — | — | $enroll_p50 ms | $enroll_p99 ms | 0 of $DEVICES | ≥ $ENROLL_GOAL/s | $(verdict "$enroll_rps" '>=' "$ENROLL_GOAL") |"
        echo "| server RSS / peak (VmRSS / VmHWM) after the runs | $(kib_to_mib "$rss_kib") / $(kib_to_mib "$hwm_kib") MiB (heap and stacks $(kib_to_mib "$anon_kib"), files $(kib_to_mib "$file_kib")) | — | — | | | | — | — |"
        echo
        echo "nginx anchor latency: 200 p50 $n200_p50 ms, p99 $n200_p99 ms; 304 p50 $n304_p50 ms, p99 $n304_p99 ms." \
            "wrk socket errors: reports $rep_socket, director $dir_socket, image $img_socket." \
            "Enrollment and first reports: bench_fleet, $CONCURRENCY in flight; reports: $ROUNDS pre-signed per device." \
            "CPU during the unchanged reports: $rep_cpu." \
            "CPU spent on the first reports: $first_cpu."
    )
    tables+=("$table")
    printf '%s\n\n' "$table" >&2
}

if [[ -z ${BENCH_NO_SQLITE:-} ]]; then
    run_backend SQLite ""
fi

if [[ -n $BENCH_POSTGRES ]]; then
    "$repo/scripts/ensure-postgres.sh" >&2
    command -v psql >/dev/null || die "psql is required for BENCH_POSTGRES"
    pg_admin=$BENCH_POSTGRES
    pg_name=patchgate_bench_fleet_$(printf '%04x%04x' $RANDOM $RANDOM)
    log "PostgreSQL: creating database $pg_name"
    psql "$pg_admin" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $pg_name" >/dev/null || die "could not create $pg_name"
    pg_base=${pg_admin%%\?*}
    pg_query=${pg_admin#"$pg_base"}
    run_backend PostgreSQL "${pg_base%/*}/$pg_name$pg_query"
    drop_database
fi

echo
echo "## patchgate fleet benchmark (scripts/bench.sh)"
echo
echo "Machine: $machine. Commit: $commit. Server, wrk, nginx and bench_fleet share these CPUs."
echo
for table in "${tables[@]}"; do
    printf '%s\n\n' "$table"
done
