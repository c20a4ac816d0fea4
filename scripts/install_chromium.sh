#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (never `playwright install`: no browser downloads).
# Idempotent. Needs root (or sudo) for apt-get. The Python driver is `pip install playwright`.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null | tail -n1)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null | tail -n1)"
