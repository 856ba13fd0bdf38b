#!/usr/bin/env bash
# CNI benchmark: `podman run --rm --network <socketplane CNI net> IMAGE true`
# vs the same on podman's default (bridge) network, interleaved in one run,
# with podman 4.3's CNI backend inside a lab host namespace; then the
# plugin's own ADD time (p50/p99, process start to result). Prints the
# medians and their ratio (goal: at most 1.1x) and the ADD percentiles
# (goal: p99 under 50 ms). The agent and plugin measured are release
# builds; the harness is the dev-profile test. Run as root; needs podman,
# containernetworking-plugins, busybox-static. Removes its lab, containers
# and podman dirs on exit.
# Usage: bench/cni.sh [RUNS [ADDS]]   (BENCH_PROFILE=dev: measure dev builds)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p socketplane-cni --bins
if [ "${BENCH_PROFILE:-release}" = release ]; then
  cargo build --release --locked -p socketplane -p socketplane-cni --bins
  export BENCH_BIN_DIR="$PWD/target/release"
fi
BENCH_RUNS="${1:-20}" BENCH_ADDS="${2:-200}" exec cargo test --locked \
    -p socketplane --test cni bench_podman_run_socketplane_vs_bridge -- --ignored --nocapture
