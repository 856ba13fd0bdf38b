#!/usr/bin/env bash
# Scale benchmark (issue 16): HOSTS agents (default 100) in network
# namespaces with the recording datapath, ENDPOINTS endpoints (default
# 10000). Run as root; removes its lab on exit. Debug build by default
# (BUILD=release for optimised agents).
#   bench/scale.sh [HOSTS] [ENDPOINTS] [RATE] [PHASES]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BUILD:-debug}
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --locked -p socketplane --bin socketplane --example bench_scale
exec "./target/$profile/examples/bench_scale" "$PWD/target/$profile/socketplane" "$@"
