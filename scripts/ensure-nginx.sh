#!/usr/bin/env bash
# Make sure Debian's nginx is installed for the reverse-proxy tests.
# Prints the executable's path; exits 1 when it is missing and cannot be installed.
# The package is installed without starting its system service: the tests run
# their own nginx master as the current user, on loopback ports.
set -euo pipefail
for c in "${NGINX_PATH:-}" nginx /usr/sbin/nginx; do
  if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
    command -v "$c"
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo ">> installing nginx and openssl (apt), without starting the nginx service" >&2
  # invoke-rc.d asks policy-rc.d whether a package may start its service; 101
  # says no. An existing policy is left as it is.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx openssl >/dev/null
  command -v nginx || echo /usr/sbin/nginx
  exit 0
fi
echo "nginx (and openssl) are not installed and cannot be installed without root" >&2
exit 1
