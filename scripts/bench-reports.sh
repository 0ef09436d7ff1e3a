#!/usr/bin/env bash
# Benchmark of device reports with a large enrolled fleet (not run in CI).
#
# Builds examples/bench_reports.rs in release mode and runs it twice: on SQLite (a temporary
# file) and on PostgreSQL (a fresh database on the local server, dropped afterwards). Each
# run seeds DEVICES devices in bulk, starts a 100% rollout to all of them and prints the
# median and p99 latency of report -> assignment -> answer (the first report after the start:
# the device is assigned and its director metadata signed) and of an unchanged poll.
# Goal: median under 2 ms for the first report with 100 000 devices.
#
# Usage:  scripts/bench-reports.sh
# Environment: DEVICES (default 100000), SAMPLES (default 2000),
#              BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432/test; "" skips it)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export DEVICES=${DEVICES:-100000} SAMPLES=${SAMPLES:-2000}
pg=${BENCH_POSTGRES-postgres://postgres@127.0.0.1:5432/test}
echo "==> building (release)" >&2
cargo build --release --example bench_reports
bin=$repo/target/release/examples/bench_reports
echo "==> SQLite" >&2
BENCH_POSTGRES= RUST_LOG=warn "$bin"
if [[ -n "$pg" ]]; then
  scripts/ensure-postgres.sh >&2
  echo "==> PostgreSQL" >&2
  BENCH_POSTGRES=$pg RUST_LOG=warn "$bin"
fi
