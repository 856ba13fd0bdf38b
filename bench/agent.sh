#!/usr/bin/env bash
# Agent benchmark: attach latency (p50/p99) and join-to-connectivity on a
# 3-host lab in network namespaces. Run as root. Removes its lab on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p socketplane --bin socketplane --example bench_agent
exec ./target/release/examples/bench_agent "$PWD/target/release/socketplane" "${1:-50}"
