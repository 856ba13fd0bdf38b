#!/usr/bin/env bash
# Store benchmark: CAS throughput and p50/p99 latency on a 3-node embedded
# Raft cluster (loopback TCP) beside a 3-member etcd cluster on loopback
# (like for like) and a single etcd server, on this machine, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages etcd-server protobuf-compiler
cargo build --release --locked -p socketplane-store-raft --example bench_store
exec ./target/release/examples/bench_store "${1:-2000}"
