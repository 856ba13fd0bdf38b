#!/usr/bin/env bash
# Docker benchmark: `docker run --rm --network <socketplane net> IMAGE true`
# vs the same on Docker's default bridge, interleaved in one run, on a real
# dockerd inside a lab host namespace. Prints the medians and their ratio
# (goal: at most 1.2x). Run as root; needs docker.io and busybox-static.
# Removes its lab and dockerd on exit. Usage: bench/docker.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_RUNS="${1:-20}" exec cargo test --release --locked -p socketplane --test docker \
    bench_docker_run_socketplane_vs_bridge -- --ignored --nocapture
