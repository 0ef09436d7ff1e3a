#!/usr/bin/env bash
# Installs Debian's swupdate (with suricatta, its hawkBit client), cpio and openssl when missing:
# the DDI end-to-end test (tests/it/swupdate.rs) runs the real client against the server and
# builds a signed .swu. Idempotent; needs root or sudo the first time, nothing afterwards.
set -euo pipefail
if command -v swupdate >/dev/null 2>&1 && command -v cpio >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
    exit 0
fi
echo "== installing swupdate, cpio and openssl (the SWUpdate end-to-end test)" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq swupdate cpio openssl >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq swupdate cpio openssl >/dev/null; }
# The package ships systemd units; nothing here starts them (the test runs swupdate itself).
command -v swupdate >/dev/null && command -v cpio >/dev/null && command -v openssl >/dev/null
