#!/usr/bin/env bash
# Offloads and jumbo MTUs on the Linux datapath (issue 17 point 3), in one run.
#
# Pairs of host namespaces on one underlay switch, each running the Linux
# datapath (examples/dp-apply.rs) with one workload per host:
#   ov  overlay network, 1500-byte underlay (MTU 1450 in the workloads)
#   rt  routed network, 1500-byte underlay
#   ovj overlay network, 9000-byte underlay (MTU 8950)
#   rtj routed network, 9000-byte underlay
# plus the bare underlay at 1500 (u) and 9000 (uj) for reference.
#
# Offload settings, applied with ethtool before each run and undone after:
#   default   what the datapath leaves (veths: TSO/GSO on, GRO off)
#   udp-gro   GRO and rx-udp-gro-forwarding on the hosts' underlay eth0
#   veth-gro  GRO on both ends of every workload veth
#   no-tso    TSO and GSO off in the workloads (control: what TSO gives)
#
# Per round (the order rotates), iperf3 TCP 1 stream for SECS, with the
# underlay counters of the sending host (bytes per packet on its eth0: how
# large the frames on the wire are) and of the receiving host (packets into
# its workload per packet on its eth0: how much GRO merged). Medians over
# ROUNDS.
#
# Usage (root): bench/offloads.sh [SECONDS_PER_RUN=3] [ROUNDS=3]
#   env PROFILE=debug|release (of dp-apply; the kernel forwards either way),
#   SETTINGS="default udp-gro veth-gro no-tso" and PATHS="u uj ov rt ovj rtj"
#   (a subset: fewer runs per round)
# Needs: iproute2, iperf3, ethtool, nftables, iptables, python3, cargo.
set -euo pipefail

SECS=${1:-3}
ROUNDS=${2:-3}
PROFILE=${PROFILE:-debug}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
P="spoff$$"
NSS=()
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
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

for b in ip iperf3 ethtool nft iptables python3; do
  command -v "$b" >/dev/null || { echo "missing binary: $b" >&2; exit 1; }
done

TMP=$(mktemp -d)
echo "Building dp-apply ($PROFILE)..." >&2
if [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build -q --release -p socketplane-datapath --example dp-apply)
  SUB=release
else
  (cd "$ROOT" && cargo build -q -p socketplane-datapath --example dp-apply)
  SUB=debug
fi
DPAPPLY="${CARGO_TARGET_DIR:-$ROOT/target}/$SUB/examples/dp-apply"

addns() { ip netns add "$1"; NSS+=("$1"); ip -n "$1" link set lo up; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

SW="$P-sw"; addns "$SW"
ip -n "$SW" link add br0 type bridge; ip -n "$SW" link set br0 up
port=0
plug() { # ns cidr mtu
  port=$((port+1))
  ip -n "$SW" link add "p$port" type veth peer name eth0 netns "$1"
  ip -n "$SW" link set "p$port" mtu "$3" master br0 up
  ip -n "$1" link set eth0 mtu "$3"
  ip -n "$1" addr add "$2" dev eth0; ip -n "$1" link set eth0 up
}

# Hosts: <pair>1, <pair>2 at 198.18.0.<base+1|2>.
declare -A BASE=([u]=0 [uj]=10 [ov]=20 [rt]=30 [ovj]=40 [rtj]=50)
declare -A MTU=([u]=1500 [uj]=9000 [ov]=1500 [rt]=1500 [ovj]=9000 [rtj]=9000)
hip() { echo "198.18.0.$(( BASE[$1] + $2 ))"; }
for pair in u uj ov rt ovj rtj; do
  for n in 1 2; do addns "$P-$pair$n"; plug "$P-$pair$n" "$(hip "$pair" "$n")/24" "${MTU[$pair]}"; done
done

state() { # pair n mode subnet_third
  local pair=$1 n=$2 mode=$3 t=$4 m=$(( 3 - $2 ))
  local me="10.$t.0.1$n" peer="10.$t.0.1$m"
  local routers=""
  [ "$mode" = routed ] && routers="\"routers\":[\"$(hip "$pair" 1)\",\"$(hip "$pair" 2)\"],"
  cat <<JSON
{"networks":[{"name":"bench","vni":$((100 + t)),"subnet":"10.$t.0.0/24","gateway":"10.$t.0.1","mtu":null,"mode":"$mode"}],
 $routers
 "local":[{"id":"w$n","network":"bench","ip":"$me","mac":"02:53:0a:$(printf %02x "$t"):00:1$n","netns":"/var/run/netns/$P-$pair-w$n","ifname":"eth0"}],
 "remote":[{"id":"w$m","network":"bench","ip":"$peer","mac":"02:53:0a:$(printf %02x "$t"):00:1$m","host":"$(hip "$pair" "$m")"}]}
JSON
}
declare -A MODE=([ov]=overlay [rt]=routed [ovj]=overlay [rtj]=routed)
declare -A THIRD=([ov]=71 [rt]=72 [ovj]=73 [rtj]=74)
for pair in ov rt ovj rtj; do
  for n in 1 2; do
    addns "$P-$pair-w$n"
    state "$pair" "$n" "${MODE[$pair]}" "${THIRD[$pair]}" > "$TMP/$pair$n.json"
    echo "dp-apply $pair$n: $(nsx "$P-$pair$n" "$DPAPPLY" --iface eth0 "$TMP/$pair$n.json")" >&2
  done
  echo "$pair: workload MTU $(ip -n "$P-$pair-w1" -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mtu"])')" >&2
done

# The host end of the workload's veth on host namespace $1 of pair $2 (the
# bridge's port that is not the VXLAN device).
host_veth() {
  nsx "$1" ip -j link show master "spbr$((100 + THIRD[$2]))" | python3 -c '
import json, sys
print([l["ifname"] for l in json.load(sys.stdin) if not l["ifname"].startswith("spvx")][0])'
}

# Client namespace, server address, sending host, receiving host, the
# receiving host's device into the workload, per path.
declare -A CLIENT SERVER SND RCV INTO
for pair in u uj; do
  CLIENT[$pair]="$P-${pair}1"; SERVER[$pair]=$(hip "$pair" 2)
  SND[$pair]="$P-${pair}1"; RCV[$pair]="$P-${pair}2"; INTO[$pair]=""
done
for pair in ov rt ovj rtj; do
  CLIENT[$pair]="$P-$pair-w1"; SERVER[$pair]="10.${THIRD[$pair]}.0.12"
  SND[$pair]="$P-${pair}1"; RCV[$pair]="$P-${pair}2"
  INTO[$pair]=$(host_veth "$P-${pair}2" "$pair")
done
for pair in u uj ov rt ovj rtj; do
  srv_ns=${RCV[$pair]}; [ -n "${INTO[$pair]}" ] && srv_ns="$P-$pair-w2"
  for try in 1 2 3 4 5; do
    nsx "${CLIENT[$pair]}" ping -q -c 1 -W 2 "${SERVER[$pair]}" >/dev/null && break
    [ "$try" = 5 ] && { echo "$pair: ${SERVER[$pair]} unreachable" >&2; exit 1; }
  done
  nsx "$srv_ns" iperf3 -s -B "${SERVER[$pair]}" >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep 0.5

# offload setting on|off for a path: ethtool on the devices it names.
offload() { # pair setting on|off
  local pair=$1 s=$2 v=$3 h w dev n
  case $s in
    default) ;;
    udp-gro)
      for h in "${SND[$pair]}" "${RCV[$pair]}"; do nsx "$h" ethtool -K eth0 gro "$v" rx-udp-gro-forwarding "$v"; done ;;
    veth-gro)
      [ -z "${INTO[$pair]}" ] && return 0
      for n in 1 2; do
        h="$P-$pair$n"; w="$P-$pair-w$n"
        dev=$(host_veth "$h" "$pair")
        nsx "$h" ethtool -K "$dev" gro "$v"; nsx "$w" ethtool -K eth0 gro "$v"
      done ;;
    no-tso)
      [ -z "${INTO[$pair]}" ] && return 0
      local back=on; [ "$v" = on ] && back=off
      for n in 1 2; do nsx "$P-$pair-w$n" ethtool -K eth0 tso "$back" gso "$back"; done ;;
  esac
}
counter() { nsx "$1" cat "/sys/class/net/$2/statistics/$3"; }
measure() { # pair: "gbps bytes_per_wire_packet workload_packets_per_wire_packet"
  local pair=$1 j b0 p0 r0 q0 b1 p1 r1 q1 into
  into=${INTO[$pair]:-eth0}
  b0=$(counter "${SND[$pair]}" eth0 tx_bytes); p0=$(counter "${SND[$pair]}" eth0 tx_packets)
  r0=$(counter "${RCV[$pair]}" eth0 rx_packets); q0=$(counter "${RCV[$pair]}" "$into" tx_packets)
  [ "$into" = eth0 ] && q0=$r0
  for _ in 1 2 3 4 5; do
    j=$(nsx "${CLIENT[$pair]}" iperf3 -c "${SERVER[$pair]}" -t "$SECS" -J 2>/dev/null || true)
    case $j in *'"error"'*|'') sleep 0.5 ;; *) break ;; esac
  done
  b1=$(counter "${SND[$pair]}" eth0 tx_bytes); p1=$(counter "${SND[$pair]}" eth0 tx_packets)
  r1=$(counter "${RCV[$pair]}" eth0 rx_packets); q1=$(counter "${RCV[$pair]}" "$into" tx_packets)
  [ "$into" = eth0 ] && q1=$r1
  python3 - "$j" "$((b1 - b0))" "$((p1 - p0))" "$((r1 - r0))" "$((q1 - q0))" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
b, p, r, q = (int(x) for x in sys.argv[2:6])
g = j["end"]["sum_received"]["bits_per_second"] / 1e9
print(f"{g:.2f} {b / max(p, 1):.0f} {q / max(r, 1):.3f}")
PY
}

read -r -a SETTINGS <<< "${SETTINGS:-default udp-gro veth-gro no-tso}"
read -r -a MEASURED <<< "${PATHS:-u uj ov rt ovj rtj}"
RUNS=()
for pair in "${MEASURED[@]}"; do
  case $pair in
    u|uj) RUNS+=("$pair default") ;;
    *) for s in "${SETTINGS[@]}"; do RUNS+=("$pair $s"); done ;;
  esac
done
: > "$TMP/results"
nruns=${#RUNS[@]}
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((nruns - 1))); do
    # shellcheck disable=SC2086
    set -- ${RUNS[$(( (k + r * 5) % nruns ))]}
    offload "$1" "$2" on
    line=$(measure "$1")
    offload "$1" "$2" off
    echo "round $r $1 $2: $line" >&2
    echo "$1 $2 $line" >> "$TMP/results"
  done
done

python3 - "$TMP/results" "$ROUNDS" "$SECS" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    pair, setting, *v = line.split()
    rows.setdefault((pair, setting), []).append([float(x) for x in v])
med = {k: [st.median(c) for c in zip(*v)] for k, v in rows.items()}
spread = {k: (min(r[0] for r in v), max(r[0] for r in v)) for k, v in rows.items()}
names = {"u": "underlay 1500", "uj": "underlay 9000", "ov": "overlay 1500",
         "rt": "routed 1500", "ovj": "overlay 9000", "rtj": "routed 9000"}
print(f"Medians of {sys.argv[2]} rounds, iperf3 TCP 1 stream, {sys.argv[3]} s per run")
print(f"{'path':14} {'offloads':9} {'Gbit/s':>7} {'min-max':>11} {'B/wire pkt':>11} {'into wl/wire':>13}")
for pair in ["u", "uj", "ov", "rt", "ovj", "rtj"]:
    for s in ["default", "udp-gro", "veth-gro", "no-tso"]:
        if (pair, s) not in med:
            continue
        m = med[(pair, s)]
        lo, hi = spread[(pair, s)]
        print(f"{names[pair]:14} {s:9} {m[0]:7.2f} {lo:5.2f}-{hi:<5.2f} {m[1]:11.0f} {m[2]:13.3f}")
d = lambda p, s="default": med[(p, s)][0]
vs = [f"{names[p]} {s} {d(p, s) / d(p):.2f}" for p in ["ov", "rt", "ovj", "rtj"]
      for s in ["udp-gro", "veth-gro", "no-tso"] if (p, s) in med and (p, "default") in med]
print("vs default:", ", ".join(vs))
jumbo = [f"{names[a].split()[0]} {d(b) / d(a):.2f}" for a, b in [("u", "uj"), ("ov", "ovj"), ("rt", "rtj")]
         if (a, "default") in med and (b, "default") in med]
jumbo += [f"{names[a].split()[0]} no-tso {d(b, 'no-tso') / d(a, 'no-tso'):.2f}"
          for a, b in [("ov", "ovj"), ("rt", "rtj")] if (a, "no-tso") in med and (b, "no-tso") in med]
if jumbo:
    print("9000 vs 1500:", ", ".join(jumbo))
PY
