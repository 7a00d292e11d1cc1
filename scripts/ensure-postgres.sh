#!/usr/bin/env bash
# The fleet store tests run the same suite against a real PostgreSQL server they start themselves
# (a throw-away cluster on a free port). Install the server binaries when missing and we may.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian postgresql for the fleet store tests..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
  echo "warning: PostgreSQL is not installed (sudo apt-get install postgresql); its store tests will be skipped" >&2
fi
