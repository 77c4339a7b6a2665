#!/usr/bin/env bash
# The UCX bridge against a plain TCP socket across a veth pair between two
# network namespaces ("host A", "host B"), at 64 KiB, 1 MiB and 16 MiB:
#
#   bridge: bridge_bench produce (A) -> fbuf-bridge export (A) ==veth==>
#           fbuf-bridge import (B) -> bridge_bench consume (B)
#   tcp:    bridge_bench tcp-send (A) ==veth==> bridge_bench tcp-recv (B): write()/read()
#
# Prints, per size, each end's line (throughput, one-way p50/p99, CPU) and
# the counters and CPU seconds of each bridge process. Needs root.
#
#   bench/bridge_bench.sh BUILD_DIR [COUNT_64K] [COUNT_1M] [COUNT_16M]
set -euo pipefail
build=$(cd "${1:?usage: bridge_bench.sh BUILD_DIR [COUNT_64K COUNT_1M COUNT_16M]}" && pwd)
counts=("${2:-20000}" "${3:-2000}" "${4:-200}")
sizes=(65536 1048576 16777216)
bench=$build/bench/bridge_bench
bridge=$build/bridge/fbuf-bridge
a=fbbenchA$$ b=fbbenchB$$
cleanup() { ip netns del $a 2>/dev/null || true; ip netns del $b 2>/dev/null || true; }
trap cleanup EXIT
ip netns add $a; ip netns add $b
ip link add va netns $a type veth peer name vb netns $b
ip -n $a addr add 10.79.0.1/24 dev va; ip -n $b addr add 10.79.0.2/24 dev vb
for ns in $a $b; do ip -n $ns link set lo up; done
ip -n $a link set va up; ip -n $b link set vb up
until ip -n $a -o link show dev va | grep -q 'state UP' && ip -n $b -o link show dev vb | grep -q 'state UP'; do
  sleep 0.05
done
tmp=$(mktemp -d)
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in 0 1 2; do
  size=${sizes[$i]} n=${counts[$i]}
  # bridge
  ip netns exec $a "$bridge" export bench --listen 10.79.0.1:18600 \
    > "$tmp/ex" 2>&1 &
  ex=$!
  sleep 0.3
  ip netns exec $b "$bridge" import bench --connect 10.79.0.1:18600 \
    --as benchB --buffers 8 --buffer-size "$size" --wait-consumers 1 > "$tmp/im" 2>&1 &
  im=$!
  ip netns exec $b "$bench" consume benchB "$n" > "$tmp/co" &
  co=$!
  ip netns exec $a "$bench" produce bench "$size" "$n" > "$tmp/pr"
  wait $co
  # The importer serves its local consumers until told to stop (or until
  # the exporter's End, which this script does not wait for).
  kill -INT $im 2>/dev/null || true
  wait $im || true
  kill -INT $ex; wait $ex || true
  echo "consumer:  $(cat "$tmp/co")"
  echo "producer:  $(cat "$tmp/pr")"
  echo "exporter:  $(grep -o "sent=.*" "$tmp/ex" || true)"; grep -h "cut off" "$tmp/ex" "$tmp/im" || true
  echo "importer:  $(grep -o 'received=.*' "$tmp/im" || true)"
  # plain TCP
  ip netns exec $b "$bench" tcp-recv 18601 "$size" "$n" > "$tmp/tr" &
  tr=$!
  sleep 0.3
  ip netns exec $a "$bench" tcp-send 10.79.0.2 18601 "$size" "$n" > "$tmp/ts"
  wait $tr
  cat "$tmp/tr" "$tmp/ts" | grep -v listening
  echo
done
rm -rf "$tmp"
