# shellcheck shell=bash
# Helpers the benchmark scripts share; sourced, never run. The sourcing script sets BENCH_NAME
# (the prefix of its error messages) first.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; exit 1; }
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# status_kib PID FIELD: a KiB field of the process's /proc status (VmRSS, VmHWM, ...).
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# stop PID: TERM, then KILL after 5 s.
stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in {1..50}; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Whether something answers a TCP connect on loopback port $1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free loopback port (one nothing answers on), below the kernel's range of ephemeral ports:
# a port in that range that nothing listens on may still be the local end of one of the many
# client connections a run opens (wrk, PostgreSQL's clients), and nginx's bind() then fails
# with "Address already in use", as one run here did.
free_port() {
    local candidate low=32768 _high
    read -r low _high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    (( low > 11000 )) || low=32768
    for _ in {1..100}; do
        candidate=$(( 10000 + RANDOM % (low - 10000) ))
        if ! port_in_use "$candidate"; then echo "$candidate"; return 0; fi
    done
    die "found no free port"
}
