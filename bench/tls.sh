#!/usr/bin/env bash
# What TLS costs on the cluster port: CAS throughput and p50/p99 on a
# 3-node embedded cluster behind the agent's cluster-port server, with
# node certificates (mutual TLS) beside --open (plain HTTP), in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p socketplane --example bench_cluster_tls
exec ./target/release/examples/bench_cluster_tls "${1:-2000}"
