#!/usr/bin/env bash
# The main job on a fresh Debian/Ubuntu machine, as root: installs what the
# build and the lab need, builds SocketPlane from source and runs the demo
# (a 3-host lab in network namespaces, removed when it ends).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root scripts/demo.sh
ensure_packages iproute2 iputils-ping nftables iptables
cargo build --release --locked -p socketplane
exec ./target/release/socketplane demo
