#!/usr/bin/env bash
# Datapath benchmark (issue 4): builds a two-host lab in network namespaces and
# runs iperf3 and ping side by side, in one run, over
#   1. the underlay (host namespace to host namespace),
#   2. a hand-built kernel VXLAN + bridge overlay (ip/bridge commands only),
#   3. the SocketPlane Linux datapath, overlay network (examples/dp-apply.rs),
#   4. the SocketPlane Linux datapath, routed network (same subnet: routes, no
#      encapsulation),
#   5. the SocketPlane Open vSwitch datapath (examples/ovs-apply.rs): each of
#      its two hosts runs its own ovsdb-server + ovs-vswitchd (userspace
#      netdev datapath here) with the underlay address on br-phy.
# Every path gets its own pair of host namespaces on the same underlay switch,
# so the paths do not share netfilter state. All traffic stays between the
# namespaces created here; everything is removed on exit (trap).
#
# Per round (the order of the paths rotates between rounds): TCP 1 stream and
# 4 streams (iperf3), UDP 64-byte packets per second (iperf3 -u -l 64 -b 0,
# received), iperf3's own CPU use per Gbit/s on each side (1 stream), and TCP
# request/response latency (1-byte ping-pong on one connection, bench/tcp_rr.py,
# p50 and p99 of RR_SAMPLES). The OVS daemons are stopped (SIGSTOP) while the
# other paths are measured, so their polling threads do not steal the CPU.
# Figures are medians over the rounds; latency also shows the spread of the
# per-round p50 (min-max).
#
# Usage (root): bench/datapath.sh [SECONDS_PER_RUN] [ROUNDS]
#   env RR_SAMPLES (default 2000), PROFILE=debug|release (of the apply
#   examples; default release; the kernel forwards either way).
# Needs: iproute2, iperf3, iputils-ping, nftables, iptables, python3, cargo,
# openvswitch-switch.
set -euo pipefail

SECS=${1:-5}
ROUNDS=${2:-3}
RR_SAMPLES=${RR_SAMPLES:-2000}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
P="spbench$$"
NSS=()
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -CONT "$pid" 2>/dev/null && kill "$pid" 2>/dev/null; done
  # What runs in our namespaces (servers started through a function: $! is
  # the subshell's, not the server's) goes with them.
  for ns in "${NSS[@]:-}"; do
    [ -n "$ns" ] || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "${TMP:-/nonexistent}"
}
trap cleanup EXIT INT TERM

for b in ip bridge iperf3 ping nft iptables python3 ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl; do
  command -v "$b" >/dev/null || { echo "missing binary: $b" >&2; exit 1; }
done

TMP=$(mktemp -d)
echo "Building dp-apply ($PROFILE)..." >&2
if [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build -q --release -p socketplane-datapath --example dp-apply --example ovs-apply)
  SUB=release
else
  (cd "$ROOT" && cargo build -q -p socketplane-datapath --example dp-apply --example ovs-apply)
  SUB=debug
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DPAPPLY="$TARGET/$SUB/examples/dp-apply"
OVSAPPLY="$TARGET/$SUB/examples/ovs-apply"
RR="$ROOT/bench/tcp_rr.py"

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
# Host pairs: u (underlay), b (baseline), s (socketplane linux), r (socketplane
# linux, routed network), o (socketplane ovs).
declare -A IP=([u1]=198.18.0.1 [u2]=198.18.0.2 [b1]=198.18.0.11 [b2]=198.18.0.12 [s1]=198.18.0.21 [s2]=198.18.0.22 [r1]=198.18.0.41 [r2]=198.18.0.42 [o1]=198.18.0.31 [o2]=198.18.0.32)
i=0
for h in u1 u2 b1 b2 s1 s2 r1 r2 o1 o2; do addns "$P-$h"; plug "$P-$h" "p$i" "${IP[$h]}/24"; i=$((i+1)); done

# Workload namespaces.
for w in bw1 bw2 sw1 sw2 rw1 rw2 ow1 ow2; do addns "$P-$w"; done

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

# 4. The same datapath with a routed network between r1 and r2.
routed_state() { # local remote local_ip remote_ip remote_host
  state "$1" "$3" "02:53:0a:63:00:${3##*.}" "$2" "$4" "02:53:0a:63:00:${4##*.}" "$5" |
    sed -e 's/10.77.0/10.99.0/g' -e 's/"mtu":null/"mtu":null,"mode":"routed"/' \
        -e "s/^ \"remote\"/ \"routers\":[\"${IP[r1]}\",\"${IP[r2]}\"],\n \"remote\"/"
}
routed_state rw1 rw2 10.99.0.11 10.99.0.12 "${IP[r2]}" > "$TMP/r1.json"
routed_state rw2 rw1 10.99.0.12 10.99.0.11 "${IP[r1]}" > "$TMP/r2.json"
echo "dp-apply r1: $(nsx "$P-r1" "$DPAPPLY" --iface eth0 "$TMP/r1.json")" >&2
echo "dp-apply r2: $(nsx "$P-r2" "$DPAPPLY" --iface eth0 "$TMP/r2.json")" >&2
echo "dp-apply r1 again (no-op): $(nsx "$P-r1" "$DPAPPLY" --iface eth0 "$TMP/r1.json")" >&2
echo "routes on r1: $(ip -n "$P-r1" route show proto 83)" >&2

# 5. SocketPlane OVS datapath: per host its own OVS (run/db dir $TMP/<host>),
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
nsx "$P-rw1" ping -q -c 2 -W 2 10.99.0.12 >/dev/null
nsx "$P-ow1" ping -q -c 2 -W 2 10.88.0.12 >/dev/null

# iperf3 and request/response servers.
SERVERS=("u2:${IP[u2]}" "bw2:10.66.0.12" "sw2:10.77.0.12" "rw2:10.99.0.12" "ow2:10.88.0.12")
for pair in "${SERVERS[@]}"; do
  ns=${pair%%:*}; addr=${pair#*:}
  nsx "$P-$ns" iperf3 -s -B "$addr" >/dev/null 2>&1 &
  PIDS+=($!)
  nsx "$P-$ns" python3 "$RR" serve "$addr" 7100 >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep 0.5

OVS_PIDS=("$(cat "$TMP/o1/ovs-vswitchd.pid")" "$(cat "$TMP/o2/ovs-vswitchd.pid")"
          "$(cat "$TMP/o1/ovsdb-server.pid")" "$(cat "$TMP/o2/ovsdb-server.pid")")
ovs_run() { for pid in "${OVS_PIDS[@]}"; do kill "-$1" "$pid"; done; }

# One path, one round: "tcp1 tcp4 udp_pps cpu_snd cpu_rcv rr_p50 rr_p99".
iperf_json() { # client_ns server_ip args...: iperf3 -J, retried while the server is busy
  local c=$1 a=$2 out; shift 2
  for _ in 1 2 3 4 5; do
    out=$(nsx "$P-$c" iperf3 -c "$a" -t "$SECS" -J "$@" 2>/dev/null || true)
    case $out in *'"error"'*|'') sleep 0.5 ;; *) break ;; esac
  done
  printf '%s' "$out"
}
measure() { # client_ns server_ip
  local c=$1 a=$2 j1 j4 ju rr
  j1=$(iperf_json "$c" "$a")
  j4=$(iperf_json "$c" "$a" -P 4)
  ju=$(iperf_json "$c" "$a" -u -l 64 -b 0)
  rr=$(nsx "$P-$c" python3 "$RR" client "$a" 7100 "$RR_SAMPLES")
  python3 - "$j1" "$j4" "$ju" "$rr" <<'PY'
import json, sys
j1, j4, ju = (json.loads(x) for x in sys.argv[1:4])
g1 = j1["end"]["sum_received"]["bits_per_second"] / 1e9
g4 = j4["end"]["sum_received"]["bits_per_second"] / 1e9
u = ju["end"]["sum"]
pps = (u["packets"] - u["lost_packets"]) / u["seconds"]
cpu = j1["end"]["cpu_utilization_percent"]
print(f"{g1:.2f} {g4:.2f} {pps:.0f} {cpu['host_total']/g1:.2f} {cpu['remote_total']/g1:.2f} {sys.argv[4]}")
PY
}

NAMES=(underlay baseline overlay routed ovs)
PATHS=("u1 ${IP[u2]}" "bw1 10.66.0.12" "sw1 10.77.0.12" "rw1 10.99.0.12" "ow1 10.88.0.12")
: > "$TMP/results"
ovs_run STOP
for r in $(seq 1 "$ROUNDS"); do
  for k in 0 1 2 3 4; do
    idx=$(( (k + r) % 5 ))
    [ "${NAMES[$idx]}" = ovs ] && ovs_run CONT
    # shellcheck disable=SC2086
    line=$(measure ${PATHS[$idx]})
    [ "${NAMES[$idx]}" = ovs ] && ovs_run STOP
    echo "round $r ${NAMES[$idx]}: $line" >&2
    echo "${NAMES[$idx]} $line" >> "$TMP/results"
  done
done
ovs_run CONT

python3 - "$TMP/results" "$ROUNDS" "$SECS" "$RR_SAMPLES" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    name, *v = line.split()
    rows.setdefault(name, []).append([float(x) for x in v])
rounds, secs, samples = sys.argv[2:5]
med = {n: [st.median(c) for c in zip(*v)] for n, v in rows.items()}
spread = {n: (min(r[5] for r in v), max(r[5] for r in v)) for n, v in rows.items()}
print(f"Medians of {rounds} rounds ({secs} s per iperf3 run, {samples} TCP request/response samples per round)")
print(f"{'path':9} {'TCP 1':>7} {'TCP 4':>7} {'UDP 64B':>9} {'CPU%/Gbps':>13} {'RR p50':>8} {'RR p99':>8} {'p50 spread':>13}")
print(f"{'':9} {'Gbit/s':>7} {'Gbit/s':>7} {'kpps':>9} {'snd / rcv':>13} {'us':>8} {'us':>8} {'us':>13}")
for n in ["underlay", "baseline", "overlay", "routed", "ovs"]:
    if n not in med:
        continue
    m = med[n]
    lo, hi = spread[n]
    print(f"{n:9} {m[0]:7.2f} {m[1]:7.2f} {m[2]/1e3:9.0f} {m[3]:6.1f} /{m[4]:5.1f} {m[5]:8.1f} {m[6]:8.1f} {lo:6.1f}-{hi:<6.1f}")
u, b, o, r = med["underlay"], med["baseline"], med["overlay"], med["routed"]
print(f"routed / underlay:  TCP {r[0]/u[0]:.2f} (goal >= 0.95), RR p50 {r[5]/u[5]:.2f}x (goal <= 1.10x)")
print(f"overlay / baseline: TCP {o[0]/b[0]:.2f} (goal >= 1.00), RR p50 {o[5]/b[5]:.2f}x (goal <= 1.10x), "
      f"CPU/Gbps snd {o[3]/b[3]:.2f}x rcv {o[4]/b[4]:.2f}x (goal <= 1.05x)")
PY
