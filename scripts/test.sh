#!/usr/bin/env bash
# Runs every SocketPlane test on a fresh Debian/Ubuntu machine, as root.
# Installs what the tests need (Debian packages, the zeroconf Python
# package), then checks formatting and lints and runs the whole suite.
# Tests that need servers (etcd, ...) start and stop their own.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (the tests create network namespaces)" >&2
  exit 1
fi

PACKAGES=(
  iproute2 iputils-ping nftables iptables ethtool iperf3 tcpdump procps
  etcd-server protobuf-compiler
  python3 python3-pip
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== Installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their own services (e.g. etcd on :2379): the
  # tests start what they need on ports they choose.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# An independent mDNS implementation to check our advertisements against.
PY=python3
if ! "$PY" -c 'import zeroconf' 2>/dev/null; then
  echo "== Installing python zeroconf"
  "$PY" -m pip install --quiet --disable-pip-version-check zeroconf==0.154.0 \
    || "$PY" -m pip install --quiet --break-system-packages zeroconf==0.154.0
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (the socketplane binary is used by the multi-host tests)"
cargo build --workspace --locked --bins --examples
echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${SOCKETPLANE_TEST_THREADS:-4}"
