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
bin="$PWD/target/$profile/socketplane"
# A run stopped by a signal skips the harness's own teardown: remove its
# lab (agents, namespaces, links) and state here too.
export SCALE_NAME="bs$(printf %04x $(($$ % 65535)))"
cleanup() {
  "$bin" lab down --name "$SCALE_NAME" >/dev/null 2>&1 || true
  rm -rf "/tmp/sp-scale-$SCALE_NAME"
}
trap cleanup EXIT
"./target/$profile/examples/bench_scale" "$bin" "$@" &
child=$!
trap 'kill "$child" 2>/dev/null; wait "$child"; exit 130' INT TERM
wait "$child"
