#!/usr/bin/env bash
# The real servers the test suite starts on loopback besides its own: Tomcat 10 (with a JDK
# to compile its test servlet), Go (to build its test server), nginx and Caddy — the upstreams
# of the differential tests —, Redis (fleet mode's shared store) and wrk, the benchmark's load
# generator (its smoke run is a test).
# Installed from Debian when missing (as root, or through sudo), never
# started as services: each test starts and stops its own instance. Without them the suite
# fails loudly rather than skipping (`npm test` runs this first; so does .ci/run).
set -euo pipefail

declare -A NEEDS=(
  [/usr/share/tomcat10/bin/bootstrap.jar]=tomcat10
  [/usr/bin/javac]=default-jdk-headless
  [/usr/bin/go]=golang-go
  [/usr/sbin/nginx]=nginx-light
  [/usr/bin/caddy]=caddy
  [/usr/bin/wrk]=wrk
  [/usr/bin/redis-server]=redis-server
)
missing=()
for path in "${!NEEDS[@]}"; do
  [ -e "$path" ] || missing+=("${NEEDS[$path]}")
done
((${#missing[@]} == 0)) && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
    echo "test-servers: missing Debian packages: ${missing[*]}" >&2
    echo "test-servers: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  SUDO="sudo -n"
fi
echo "test-servers: installing ${missing[*]}" >&2
# Package scripts must not start services: the tests start their own instances.
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  created_policy=yes
fi
trap '[ -n "$created_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
