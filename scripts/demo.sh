#!/usr/bin/env bash
# The main job on a fresh Debian/Ubuntu machine, as root: installs what the
# build and the lab need, builds SocketPlane from source and runs the demo
# (a 3-host lab in network namespaces, removed when it ends).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/demo.sh: run as root (the lab creates network namespaces)" >&2
  exit 1
fi
PACKAGES=(iproute2 iputils-ping nftables iptables protobuf-compiler)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== Installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --locked -p socketplane
exec ./target/release/socketplane demo
