#!/usr/bin/env bash
# Runs the example pipelines as separate processes and checks that every
# consumer received exactly what the producer sent (the checksums match).
#
# usage: examples/demo.sh BUILD_DIR
#
#   1. fbuf_producer (C++) with two fbuf_consumer processes: synthetic video
#      frames, every frame to both consumers (fan-out);
#   2. fbuf_c_pipeline produce / consume (C API): a market-data feed;
#   3. fbuf_path_pipeline, the path: a camera process -> a tagger process
#      that puts a Cap'n Proto header of its own in front of each 1 MiB
#      frame and forwards the frame without a copy -> two recorder
#      processes, which find the frame bytes in their mapping of the
#      camera's pool.
#
# FBUF_DEMO_FRAMES and FBUF_DEMO_BATCHES set the amounts (defaults 600 and
# 20000; FBUF_DEMO_PATH_FRAMES, 200); FBUF_DEMO_POLICY the producer's pool policy (volatile, read-only
# or copy-on-write; default volatile); FBUF_DEMO_ONLY=path runs only the
# third. Exits nonzero if any process fails or
# any checksum differs.
set -uo pipefail

build=${1:?usage: demo.sh BUILD_DIR}
frames=${FBUF_DEMO_FRAMES:-600}
batches=${FBUF_DEMO_BATCHES:-20000}
path_frames=${FBUF_DEMO_PATH_FRAMES:-200}
only=${FBUF_DEMO_ONLY:-all}
policy=${FBUF_DEMO_POLICY:-volatile}

find_bin() {
  local name=$1 dir
  for dir in "$build/examples" "$build"; do
    if [[ -x "$dir/$name" ]]; then
      echo "$dir/$name"
      return 0
    fi
  done
  echo "demo.sh: $name not found under $build" >&2
  return 1
}
producer=$(find_bin fbuf_producer) || exit 2
consumer=$(find_bin fbuf_consumer) || exit 2
c_pipeline=$(find_bin fbuf_c_pipeline) || exit 2
path_pipeline=$(find_bin fbuf_path_pipeline) || exit 2

work=$(mktemp -d "${TMPDIR:-/tmp}/fbuf-demo.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

failed=0

# Waits for the process `pid` and reports its status under `label`.
wait_for() {
  local pid=$1 label=$2 out=$3 status
  wait "$pid"
  status=$?
  sed "s/^/  [$label] /" "$out"
  if [[ $status -ne 0 ]]; then
    echo "FAIL: $label exited with status $status"
    failed=1
  fi
}

# Prints the checksum= value from the last summary line of a log.
checksum_of() {
  grep -o 'checksum=[0-9a-f]*' "$1" | tail -n 1 | cut -d= -f2
}

# Compares a consumer's checksum with the producer's.
same_checksum() {
  local label=$1 expected=$2 got=$3
  if [[ -z "$expected" || "$expected" != "$got" ]]; then
    echo "FAIL: $label checksum '${got}' differs from the producer's '${expected}'"
    failed=1
  else
    echo "ok: $label checksum $got matches the producer's"
  fi
}

if [[ $only != path ]]; then
echo "== video frames: 1 producer process, 2 consumer processes, $frames frames ($policy)"
service="fbuf-demo-$$/frames"
"$producer" --service "$service" --count "$frames" --receivers 2 --policy "$policy" \
  >"$work/producer.log" 2>&1 &
producer_pid=$!
pids+=("$producer_pid")
"$consumer" --service "$service" --connect-timeout 20 >"$work/consumer1.log" 2>&1 &
consumer1_pid=$!
pids+=("$consumer1_pid")
"$consumer" --service "$service" --connect-timeout 20 >"$work/consumer2.log" 2>&1 &
consumer2_pid=$!
pids+=("$consumer2_pid")
wait_for "$producer_pid" producer "$work/producer.log"
wait_for "$consumer1_pid" consumer-1 "$work/consumer1.log"
wait_for "$consumer2_pid" consumer-2 "$work/consumer2.log"
sent=$(checksum_of "$work/producer.log")
same_checksum consumer-1 "$sent" "$(checksum_of "$work/consumer1.log")"
same_checksum consumer-2 "$sent" "$(checksum_of "$work/consumer2.log")"

echo "== market feed (C API): 1 producer process, 1 consumer process, $batches batches"
service="fbuf-demo-$$/ticks"
"$c_pipeline" produce "$service" "$batches" 1 >"$work/c_producer.log" 2>&1 &
c_producer_pid=$!
pids+=("$c_producer_pid")
"$c_pipeline" consume "$service" >"$work/c_consumer.log" 2>&1 &
c_consumer_pid=$!
pids+=("$c_consumer_pid")
wait_for "$c_producer_pid" c-producer "$work/c_producer.log"
wait_for "$c_consumer_pid" c-consumer "$work/c_consumer.log"
same_checksum c-consumer "$(checksum_of "$work/c_producer.log")" \
  "$(checksum_of "$work/c_consumer.log")"
fi

echo "== the path: camera -> tagger (header + forwarded frame) -> 2 recorders, $path_frames frames of 1 MiB"
service="fbuf-demo-$$/camera"
tagged="fbuf-demo-$$/tagged"
camera_pool="demo-camera-$$"
"$path_pipeline" camera --service "$service" --pool "$camera_pool" --count "$path_frames" \
  >"$work/camera.log" 2>&1 &
camera_pid=$!
pids+=("$camera_pid")
"$path_pipeline" tagger --from "$service" --service "$tagged" --receivers 2 >"$work/tagger.log" 2>&1 &
tagger_pid=$!
pids+=("$tagger_pid")
"$path_pipeline" recorder --service "$tagged" --pool "$camera_pool" >"$work/recorder1.log" 2>&1 &
recorder1_pid=$!
pids+=("$recorder1_pid")
"$path_pipeline" recorder --service "$tagged" --pool "$camera_pool" >"$work/recorder2.log" 2>&1 &
recorder2_pid=$!
pids+=("$recorder2_pid")
wait_for "$camera_pid" camera "$work/camera.log"
wait_for "$tagger_pid" tagger "$work/tagger.log"
wait_for "$recorder1_pid" recorder-1 "$work/recorder1.log"
wait_for "$recorder2_pid" recorder-2 "$work/recorder2.log"
sent=$(checksum_of "$work/camera.log")
for r in 1 2; do
  same_checksum "recorder-$r" "$sent" "$(checksum_of "$work/recorder$r.log")"
  if ! grep -q "zero copy: $path_frames of $path_frames frames read in place from r--s /memfd:fbuf:$camera_pool" \
      "$work/recorder$r.log"; then
    echo "FAIL: recorder-$r did not read every frame in the camera's pool"
    failed=1
  else
    echo "ok: recorder-$r read every frame in place in the camera's pool"
  fi
done

pids=()
if [[ $failed -ne 0 ]]; then
  echo "demo: FAILED"
  exit 1
fi
echo "demo: all checksums match"
