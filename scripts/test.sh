#!/usr/bin/env bash
# Runs every SocketPlane test on a fresh Debian/Ubuntu machine, as root.
# Installs what the tests need (Debian packages, the zeroconf Python
# package), then checks formatting and lints and runs the whole suite.
# Tests that need servers (etcd, ...) start and stop their own.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
require_root scripts/test.sh
ensure_packages \
  iproute2 iputils-ping nftables iptables ethtool iperf3 tcpdump procps chromium \
  etcd-server python3 python3-pip openvswitch-switch \
  docker.io busybox-static util-linux openssl curl \
  podman containernetworking-plugins runc bind9-dnsutils

# An independent mDNS implementation to check our advertisements against,
# at the one version the tests pin (crates/testkit/src/zeroconf.rs).
PY=python3
ZC=$(sed -n 's/^pub const ZEROCONF_VERSION: &str = "\(.*\)";/\1/p' crates/testkit/src/zeroconf.rs)
if [ "$("$PY" -c 'import zeroconf; print(zeroconf.__version__)' 2>/dev/null)" != "$ZC" ]; then
  echo "== Installing python zeroconf $ZC"
  "$PY" -m pip install --quiet --disable-pip-version-check "zeroconf==$ZC" \
    || "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages "zeroconf==$ZC"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== no module import cycles"
python3 scripts/check-module-cycles.py
echo "== cargo build (the socketplane binary is used by the multi-host tests)"
cargo build --workspace --locked --bins --examples
echo "== cargo test"
# Privileged tests skip (with a reason) when not root; here, as root, a skip
# would hide a failure, so they must run: the test kit panics instead.
export SOCKETPLANE_REQUIRE_PRIVILEGED=1
cargo test --workspace --locked --no-fail-fast -- --test-threads="${SOCKETPLANE_TEST_THREADS:-4}"
