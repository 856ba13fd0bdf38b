#!/usr/bin/env bash
# Observability overhead: CPU of each agent on a 3-host lab (two networks,
# six workloads), idle vs. with /metrics scraped every second and the
# topology page open in headless Chromium, both on host1's agent. Phases
# alternate (idle, observed, idle, observed, ...) in one run, because
# absolute figures drift on these machines. Run as root; removes its lab.
#
# usage: bench/observe.sh [SECONDS_PER_PHASE] [ROUNDS]     (default 20 2)
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:-20}
ROUNDS=${2:-2}
NAME=obsb
cargo build --release --locked -p socketplane --bin socketplane
SP=$PWD/target/release/socketplane
URL=http://127.0.0.1:9675
HZ=$(getconf CLK_TCK)

LOAD_PIDS=()
stop_load() {
  for p in "${LOAD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${LOAD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  LOAD_PIDS=()
}
cleanup() {
  stop_load
  for i in 1 2 3 4 5 6; do ip netns del "$NAME-w$i" 2>/dev/null || true; done
  "$SP" lab down --name "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$SP" lab down --name "$NAME" >/dev/null 2>&1 || true
"$SP" lab up --name "$NAME" --hosts 3 >/dev/null

on() { local h=$1; shift; "$SP" lab exec "$h" --name "$NAME" -- "$SP" "$@"; }
on host1 network create web 10.77.0.0/24 >/dev/null
i=0
for h in host1 host2 host3; do
  for net in web default; do
    i=$((i + 1))
    ip netns add "$NAME-w$i"
    on "$h" endpoint attach --netns "/var/run/netns/$NAME-w$i" -n "$net" --name "w$i" >/dev/null
  done
done

agent_pid() {
  for p in $(ip netns pids "sp-$NAME-h$1"); do
    if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = socketplane ] && grep -q agent /proc/"$p"/cmdline; then
      echo "$p"; return
    fi
  done
}
PIDS=("$(agent_pid 1)" "$(agent_pid 2)" "$(agent_pid 3)")
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }

start_load() {
  local ns=sp-$NAME-h1
  ip netns exec "$ns" bash -c "while :; do curl -s -o /dev/null $URL/metrics; sleep 1; done" &
  LOAD_PIDS+=($!)
  ip netns exec "$ns" chromium --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$(mktemp -d)" --remote-debugging-port=9333 "$URL/" >/dev/null 2>&1 &
  LOAD_PIDS+=($!)
  sleep 3 # the page loads and opens its event stream before we count
}

declare -A SUM
printf '%-9s %5s %9s %9s %9s\n' phase round host1 host2 host3
for r in $(seq 1 "$ROUNDS"); do
  for mode in idle observed; do
    [ "$mode" = observed ] && start_load
    declare -a before=()
    for k in 0 1 2; do before[$k]=$(ticks "${PIDS[$k]}"); done
    t0=$(date +%s.%N)
    sleep "$PHASE"
    t1=$(date +%s.%N)
    row=()
    for k in 0 1 2; do
      pct=$(echo "($(ticks "${PIDS[$k]}") - ${before[$k]}) / $HZ / ($t1 - $t0) * 100" | bc -l)
      row+=("$(printf '%.2f%%' "$pct")")
      SUM[$mode,$k]=$(echo "${SUM[$mode,$k]:-0} + $pct" | bc -l)
    done
    [ "$mode" = observed ] && stop_load
    printf '%-9s %5s %9s %9s %9s\n' "$mode" "$r" "${row[@]}"
  done
done
echo "mean CPU of one core over $ROUNDS x ${PHASE}s per mode:"
for mode in idle observed; do
  printf '%-9s %5s' "$mode" ""
  for k in 0 1 2; do printf ' %8.2f%%' "$(echo "${SUM[$mode,$k]} / $ROUNDS" | bc -l)"; done
  echo
done
printf '%-15s' "added (host1)"
printf ' %8.2f%% of one core\n' "$(echo "(${SUM[observed,0]} - ${SUM[idle,0]}) / $ROUNDS" | bc -l)"
