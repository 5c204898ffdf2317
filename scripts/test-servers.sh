#!/usr/bin/env bash
# The real servers the test suite starts on loopback besides its own: Tomcat 10 (with a JDK
# to compile its test servlet), Go (to build its test server), nginx and Caddy — the upstreams
# of the differential tests —, Redis (fleet mode's shared store), wrk, the benchmark's load
# generator (its smoke run is a test), Prometheus and promtool (the alert rules' unit tests and
# the dashboard's queries against a live gateway) and kubectl (`kubectl kustomize` renders
# every kustomization under k8s/).
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
  [/usr/bin/prometheus]=prometheus
  [/usr/bin/promtool]=prometheus
)
missing=()
for path in "${!NEEDS[@]}"; do
  [ -e "$path" ] || missing+=("${NEEDS[$path]}")
done
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')

# kubectl: the manifests use kustomize Components, `labels` and `replacements`, which need the
# kustomize v5 built into kubectl >= 1.27. Debian's kubernetes-client is taken only when its
# candidate is that recent (bookworm ships 1.20, whose kustomize v2 cannot render them).
KUBECTL_MIN_MINOR=27
kubectl_minor() { # the minor version of `kubectl` on the PATH, empty when absent
  command -v kubectl >/dev/null || return 0
  kubectl version --client 2>/dev/null | sed -n 's/^Client Version: v1\.\([0-9]*\).*/\1/p'
}
minor=$(kubectl_minor)
if [ -z "$minor" ] || [ "$minor" -lt "$KUBECTL_MIN_MINOR" ]; then
  candidate=$(apt-cache policy kubernetes-client 2>/dev/null | sed -n 's/^ *Candidate: 1\.\([0-9]*\)\..*/\1/p')
  if [ -n "$candidate" ] && [ "$candidate" -ge "$KUBECTL_MIN_MINOR" ]; then
    missing+=(kubernetes-client)
  else
    echo "test-servers: kubectl >= 1.$KUBECTL_MIN_MINOR is required (\`kubectl kustomize\` renders k8s/)," >&2
    found=none debian="not available"
    [ -n "$minor" ] && found="1.$minor"
    [ -n "$candidate" ] && debian="1.$candidate"
    echo "test-servers: found kubectl: $found; Debian's kubernetes-client: $debian." >&2
    echo "test-servers: install it from https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/" >&2
    echo "test-servers: (e.g. the pkgs.k8s.io apt repository), then run this again." >&2
    exit 1
  fi
fi
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
