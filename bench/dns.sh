#!/usr/bin/env bash
# DNS benchmark: qps and p50/p99 from a workload to its gateway, cluster
# names vs forwarded names side by side, with dnsperf, on a 1-host lab in
# network namespaces. Run as root (apt-get install dnsperf). Removes its lab.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dnsperf >/dev/null || { echo "needs dnsperf (apt-get install dnsperf)"; exit 1; }
cargo build --release --locked -p socketplane --bin socketplane --example bench_dns
exec ./target/release/examples/bench_dns "$PWD/target/release/socketplane" "${1:-5}"
