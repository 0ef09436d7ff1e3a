#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the admin UI's browser tests when missing
# (the test suite drives a real headless Chromium through WebDriver). Idempotent; needs root
# or sudo the first time, nothing afterwards.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
echo "== installing chromium and chromium-driver (browser tests)" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
