#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the browser tests.
# Prints the executable's path; exits 1 when it is missing and cannot be installed.
set -euo pipefail
for c in "${CHROMIUM_PATH:-}" chromium chromium-browser; do
  if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then command -v "$c"; exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo ">> installing chromium and fonts (apt)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  command -v chromium
  exit 0
fi
echo "chromium is not installed and cannot be installed without root" >&2
exit 1
