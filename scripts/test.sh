#!/usr/bin/env bash
# The whole test suite, the one command the README names and .ci/run calls:
#   1. unit and integration tests on SQLite (every crate);
#   2. the integration tests again on PostgreSQL (a fresh database per test);
#   3. python-tuf's ngclient against a real server, before and after a root rotation;
#   4. the TUF community's client conformance suite against the agent's conformance client
#      (skipped, saying so, where the suite is not beside the repository);
#   5. the README's walkthroughs, block by block, with the binaries step 1 built
#      (scripts/check-readme.py; its self-test first shows that a failing block fails it);
#   6. docker-compose.yml against the key model, and its sequence of commands run natively
#      (scripts/check-compose.py: PostgreSQL, moto's S3 for MinIO, only online keys served).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_ADMIN_URL="${PATCHGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

drop_test_databases() {
  command -v psql >/dev/null 2>&1 || return 0
  psql "$PG_ADMIN_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'patchgate_t_%'" 2>/dev/null |
    while read -r db; do psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done
}

# The admin UI's browser tests drive Debian's headless Chromium through ChromeDriver.
bash scripts/ensure-chromium.sh
# The HSM tests keep the online keys in SoftHSM.
bash scripts/ensure-softhsm.sh >/dev/null
# The split-trust tests check what python-tuf's ngclient sees.
bash scripts/ensure-venv.sh pytuf
# The DDI end-to-end test runs Debian's SWUpdate (suricatta) against the server.
bash scripts/ensure-swupdate.sh

echo "== unit and integration tests (SQLite)"
cargo test --workspace

echo "== integration tests (PostgreSQL)"
bash scripts/ensure-postgres.sh
drop_test_databases
trap drop_test_databases EXIT
PATCHGATE_TEST_POSTGRES="$PG_ADMIN_URL" cargo test --test it

echo "== python-tuf ngclient interoperability"
# The server binary the SQLite run built (integration tests build the package's binaries).
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
PATCHGATE_BIN="$target_dir/debug/patchgate" bash scripts/check-python-tuf.sh

echo "== TUF conformance suite (the agent's client)"
# The client binary the SQLite run built (the agent's integration tests build its binaries).
TUF_CONFORMANCE_CLIENT="$target_dir/debug/tuf-conformance-client" bash scripts/check-tuf-conformance.sh

echo "== README walkthroughs"
python3 scripts/check-readme.py --self-test --bin-dir "$target_dir/debug"
# The five-minute block, pasted into a shell on a fresh data directory, must work every time.
python3 scripts/check-readme.py --bin-dir "$target_dir/debug" --python target/pytuf-venv/bin/python \
  --first-block-runs quickstart=10

echo "== docker-compose.yml (checked, and its sequence run natively)"
bash scripts/ensure-venv.sh moto
target/moto-venv/bin/python scripts/check-compose.py --bin-dir "$target_dir/debug" --postgres "$PG_ADMIN_URL"
