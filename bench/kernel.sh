#!/usr/bin/env bash
# The Linux datapath with many remote endpoints on one host (issue 16
# point 5): apply time of one change, of a resync, and the FDB/neighbour
# entries against gc_thresh, at 200 and 2000 remote endpoints. Run as root;
# uses its own namespace (veth eth0 198.18.5.1/16) and removes it on exit.
#   bench/kernel.sh [REMOTES...]       # env: PROFILE=debug|release (debug)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-debug}"
flag=""; [ "$profile" = release ] && flag="--release"
cargo build --locked $flag -p socketplane-datapath --example bench_remote
ns="sp-kbench-$$"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add eth0 type veth peer name eth1
ip -n "$ns" link set eth1 up
ip -n "$ns" addr add 198.18.5.1/16 dev eth0
ip -n "$ns" link set eth0 up
echo "gc_thresh1/2/3 (machine-wide): $(cat /proc/sys/net/ipv4/neigh/default/gc_thresh{1,2,3} | tr '\n' ' ')"
for n in "${@:-200 2000}"; do
  for m in $n; do ip netns exec "$ns" "./target/$profile/examples/bench_remote" "$m" 20; done
done
