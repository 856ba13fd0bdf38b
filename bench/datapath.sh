#!/usr/bin/env bash
# Datapath benchmark (issue 4): builds a two-host lab in network namespaces and
# runs iperf3 and ping side by side, in one run, over
#   1. the underlay (host namespace to host namespace),
#   2. a hand-built kernel VXLAN + bridge overlay (ip/bridge commands only),
#   3. the SocketPlane Linux datapath (driven by examples/dp-apply.rs),
#   4. the SocketPlane Open vSwitch datapath (examples/ovs-apply.rs): each of
#      its two hosts runs its own ovsdb-server + ovs-vswitchd (userspace
#      netdev datapath here) with the underlay address on br-phy.
# Every path gets its own pair of host namespaces on the same underlay switch,
# so the paths do not share netfilter state. All traffic stays between the
# namespaces created here; everything is removed on exit (trap).
#
# Usage (root): bench/datapath.sh [SECONDS_PER_RUN] [ROUNDS]
# Needs: iproute2, iperf3, iputils-ping, nftables, iptables, python3, cargo,
# openvswitch-switch.
set -euo pipefail

SECS=${1:-5}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
P="spbench$$"
NSS=()
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
  for ns in "${NSS[@]:-}"; do [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null; done
  rm -rf "${TMP:-/nonexistent}"
}
trap cleanup EXIT INT TERM

for b in ip bridge iperf3 ping nft iptables python3 ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl; do
  command -v "$b" >/dev/null || { echo "missing binary: $b" >&2; exit 1; }
done

TMP=$(mktemp -d)
echo "Building dp-apply (release)..." >&2
(cd "$ROOT" && cargo build -q --release -p socketplane-datapath --example dp-apply --example ovs-apply)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DPAPPLY="$TARGET/release/examples/dp-apply"
OVSAPPLY="$TARGET/release/examples/ovs-apply"

addns() { ip netns add "$1"; NSS+=("$1"); ip -n "$1" link set lo up; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Underlay switch.
SW="$P-sw"; addns "$SW"
ip -n "$SW" link add br0 type bridge; ip -n "$SW" link set br0 up
plug() { # ns port cidr
  ip -n "$SW" link add "$2" type veth peer name eth0 netns "$1"
  ip -n "$SW" link set "$2" master br0 up
  ip -n "$1" addr add "$3" dev eth0; ip -n "$1" link set eth0 up
}
# Host pairs: u (underlay), b (baseline), s (socketplane linux), o (socketplane ovs).
declare -A IP=([u1]=198.18.0.1 [u2]=198.18.0.2 [b1]=198.18.0.11 [b2]=198.18.0.12 [s1]=198.18.0.21 [s2]=198.18.0.22 [o1]=198.18.0.31 [o2]=198.18.0.32)
i=0
for h in u1 u2 b1 b2 s1 s2 o1 o2; do addns "$P-$h"; plug "$P-$h" "p$i" "${IP[$h]}/24"; i=$((i+1)); done

# Workload namespaces.
for w in bw1 bw2 sw1 sw2 ow1 ow2; do addns "$P-$w"; done

# 2. Hand-built baseline: bridge + VXLAN (VNI 4000), static flood entry to the peer.
baseline_host() { # host peer_ip workload wl_ip
  local h="$P-$1" peer=$2 w="$P-$3"
  ip -n "$h" link add bbr type bridge
  ip -n "$h" link add bvx type vxlan id 4000 dstport 4789 local "${IP[$1]}" dev eth0 nolearning
  ip -n "$h" link set bvx master bbr mtu 1450 up
  ip -n "$h" link set bbr mtu 1450 up
  ip -n "$h" link add bveth type veth peer name eth0 netns "$w"
  ip -n "$h" link set bveth master bbr mtu 1450 up
  ip -n "$w" link set eth0 mtu 1450 up
  ip -n "$w" addr add "$4/24" dev eth0
  bridge -n "$h" fdb append 00:00:00:00:00:00 dev bvx dst "$peer"
}
baseline_host b1 "${IP[b2]}" bw1 10.66.0.11
baseline_host b2 "${IP[b1]}" bw2 10.66.0.12

# 3. SocketPlane datapath.
state() { # local_ws local_ip local_mac remote_id remote_ip remote_mac remote_host
  cat <<JSON
{"networks":[{"name":"bench","vni":100,"subnet":"10.77.0.0/24","gateway":"10.77.0.1","mtu":null}],
 "local":[{"id":"$1","network":"bench","ip":"$2","mac":"$3","netns":"/var/run/netns/$P-$1","ifname":"eth0"}],
 "remote":[{"id":"$4","network":"bench","ip":"$5","mac":"$6","host":"$7"}]}
JSON
}
state sw1 10.77.0.11 02:53:0a:4d:00:0b sw2 10.77.0.12 02:53:0a:4d:00:0c "${IP[s2]}" > "$TMP/s1.json"
state sw2 10.77.0.12 02:53:0a:4d:00:0c sw1 10.77.0.11 02:53:0a:4d:00:0b "${IP[s1]}" > "$TMP/s2.json"
echo "dp-apply s1: $(nsx "$P-s1" "$DPAPPLY" --iface eth0 "$TMP/s1.json")" >&2
echo "dp-apply s2: $(nsx "$P-s2" "$DPAPPLY" --iface eth0 "$TMP/s2.json")" >&2
echo "dp-apply s1 again (no-op): $(nsx "$P-s1" "$DPAPPLY" --iface eth0 "$TMP/s1.json")" >&2

# 4. SocketPlane OVS datapath: per host its own OVS (run/db dir $TMP/<host>),
# the underlay address moved from eth0 to br-phy (userspace tunnelling).
ovs_host() { # host
  local h="$P-$1" d="$TMP/$1"
  mkdir -p "$d"
  ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  nsx "$h" env OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" ovsdb-server "$d/conf.db" \
    --remote=punix:"$d/db.sock" --pidfile="$d/ovsdb-server.pid" --unixctl="$d/ovsdb-server.ctl" \
    --log-file="$d/ovsdb-server.log" --detach
  PIDS+=("$(cat "$d/ovsdb-server.pid")")
  nsx "$h" ovs-vsctl --db=unix:"$d/db.sock" --no-wait init
  nsx "$h" env OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" ovs-vswitchd unix:"$d/db.sock" \
    --pidfile="$d/ovs-vswitchd.pid" --unixctl="$d/ovs-vswitchd.ctl" \
    --log-file="$d/ovs-vswitchd.log" --detach
  PIDS+=("$(cat "$d/ovs-vswitchd.pid")")
  nsx "$h" ovs-vsctl --db=unix:"$d/db.sock" --timeout=10 add-br br-phy \
    -- set bridge br-phy datapath_type=netdev -- add-port br-phy eth0
  ip -n "$h" addr flush dev eth0
  ip -n "$h" addr add "${IP[$1]}/24" dev br-phy
  ip -n "$h" link set br-phy up
}
ovs_host o1
ovs_host o2
state ow1 10.88.0.11 02:53:0a:58:00:0b ow2 10.88.0.12 02:53:0a:58:00:0c "${IP[o2]}" | sed 's/10.77.0/10.88.0/g' > "$TMP/o1.json"
state ow2 10.88.0.12 02:53:0a:58:00:0c ow1 10.88.0.11 02:53:0a:58:00:0b "${IP[o1]}" | sed 's/10.77.0/10.88.0/g' > "$TMP/o2.json"
echo "ovs-apply o1: $(nsx "$P-o1" "$OVSAPPLY" --ovsdb "$TMP/o1/db.sock" "$TMP/o1.json")" >&2
echo "ovs-apply o2: $(nsx "$P-o2" "$OVSAPPLY" --ovsdb "$TMP/o2/db.sock" "$TMP/o2.json")" >&2
echo "ovs-apply o1 again (no-op): $(nsx "$P-o1" "$OVSAPPLY" --ovsdb "$TMP/o1/db.sock" "$TMP/o1.json")" >&2

# Sanity: every path works before measuring.
nsx "$P-u1" ping -q -c 2 -W 2 "${IP[u2]}" >/dev/null
nsx "$P-bw1" ping -q -c 2 -W 2 10.66.0.12 >/dev/null
nsx "$P-sw1" ping -q -c 2 -W 2 10.77.0.12 >/dev/null
nsx "$P-ow1" ping -q -c 2 -W 2 10.88.0.12 >/dev/null

# iperf3 servers.
for pair in "u2:${IP[u2]}" "bw2:10.66.0.12" "sw2:10.77.0.12" "ow2:10.88.0.12"; do
  ns=${pair%%:*}; addr=${pair#*:}
  nsx "$P-$ns" iperf3 -s -B "$addr" >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep 0.5

iperf() { # client_ns server_ip -> Gbit/s
  nsx "$P-$1" iperf3 -c "$2" -t "$SECS" -J 2>/dev/null | python3 -c \
    'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
rtt() { # client_ns dst -> avg ms
  nsx "$P-$1" ping -q -n -c 200 -i 0.01 "$2" | awk -F/ '/^rtt|^round-trip/ {print $5}'
}

# Rounds rotate the order of the four paths so none always runs first.
PATHS=("u1 ${IP[u2]}" "bw1 10.66.0.12" "sw1 10.77.0.12" "ow1 10.88.0.12")
U=(); B=(); S=(); O=()
echo "round underlay_gbps baseline_gbps socketplane_gbps ovs_gbps" >&2
for r in $(seq 1 "$ROUNDS"); do
  declare -A res=()
  for k in 0 1 2 3; do
    idx=$(( (k + r) % 4 ))
    # shellcheck disable=SC2086
    res[$idx]=$(iperf ${PATHS[$idx]})
  done
  echo "$r ${res[0]} ${res[1]} ${res[2]} ${res[3]}" >&2
  U+=("${res[0]}"); B+=("${res[1]}"); S+=("${res[2]}"); O+=("${res[3]}")
  unset res
done
RU=$(rtt u1 "${IP[u2]}"); RB=$(rtt bw1 10.66.0.12); RS=$(rtt sw1 10.77.0.12); RO=$(rtt ow1 10.88.0.12)

python3 - "${U[*]}" "${B[*]}" "${S[*]}" "${O[*]}" "$RU" "$RB" "$RS" "$RO" <<'PY'
import statistics, sys
u, b, s, o = (statistics.median(float(x) for x in a.split()) for a in sys.argv[1:5])
ru, rb, rs, ro = sys.argv[5:9]
n = len(sys.argv[1].split())
print(f"iperf3 TCP, median of {n} runs; ping: avg of 200")
print(f"  underlay     {u:7.2f} Gbit/s   ping avg {ru} ms")
print(f"  baseline     {b:7.2f} Gbit/s   ping avg {rb} ms   (hand-built VXLAN+bridge)")
print(f"  socketplane  {s:7.2f} Gbit/s   ping avg {rs} ms   (linux datapath)")
print(f"  ovs          {o:7.2f} Gbit/s   ping avg {ro} ms   (ovs datapath, userspace netdev)")
print(f"  socketplane / baseline = {100*s/b:5.1f} %  (goal >= 97 %)")
print(f"  socketplane / underlay = {100*s/u:5.1f} %  (goal >= 80 %)")
print(f"  ovs / baseline         = {100*o/b:5.1f} %  (no target on netdev)")
PY
