#!/usr/bin/env bash
# Installs Debian's SoftHSM 2 (a PKCS#11 token in files) and OpenSC's pkcs11-tool when missing:
# the tests that keep the online keys in an HSM (tests/it/hsm.rs) run against SoftHSM.
# Idempotent; needs root or sudo the first time, nothing afterwards. Prints the module's path.
set -euo pipefail
MODULE=/usr/lib/softhsm/libsofthsm2.so
if [[ -f $MODULE ]] && command -v softhsm2-util >/dev/null 2>&1 && command -v pkcs11-tool >/dev/null 2>&1; then
    echo "$MODULE"
    exit 0
fi
echo "== installing softhsm2 and opensc (PKCS#11 tests)" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq softhsm2 opensc >/dev/null
[[ -f $MODULE ]] && command -v softhsm2-util >/dev/null && command -v pkcs11-tool >/dev/null
echo "$MODULE"
