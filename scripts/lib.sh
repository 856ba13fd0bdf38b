# Shared by scripts/*.sh: installs Debian packages that are missing.
# Packages must not start their own services (e.g. etcd on :2379): tests
# start what they need on ports they choose.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== Installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ $had_policy = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  local rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ $had_policy = 0 ] && rm -f /usr/sbin/policy-rc.d
  return $rc
}

require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "$1: run as root (it creates network namespaces)" >&2
    exit 1
  fi
}
