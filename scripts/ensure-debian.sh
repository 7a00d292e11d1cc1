#!/usr/bin/env bash
# Usage: scripts/ensure-debian.sh COMMAND PACKAGE WHY
# Some tests need a Debian package the project cannot vendor (chromium for the browser tests, postgresql
# for the store tests). Install it when COMMAND is missing and we may; otherwise say which tests will skip.
set -euo pipefail
command_name=$1 package=$2 why=$3
if command -v "$command_name" >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/"$command_name" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian $package for $why..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
else
  echo "warning: $package is not installed and this user cannot install it (sudo apt-get install $package);" \
       "$why will be skipped" >&2
fi
