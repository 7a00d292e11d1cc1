#!/usr/bin/env bash
# The web page tests drive Debian's chromium through Playwright (no browser download).
# Install it when missing and we are allowed to; otherwise say why those tests will be skipped.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian chromium for the browser tests..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "warning: chromium is not installed and this user cannot install it (run: sudo apt-get install chromium);" \
       "the browser tests will be skipped" >&2
fi
