#!/usr/bin/env bash
# Runs the Python examples against each other and against the C++ ones, as
# separate processes, and checks that every consumer received exactly what
# its producer sent (the checksums match):
#
#   1. fbuf_producer (C++)  -> consumer.py
#   2. producer.py          -> fbuf_consumer (C++)
#   3. producer.py          -> consumer.py and fbuf_consumer (fan-out, read-only policy)
#
# usage: examples/python/demo.sh BUILD_DIR
#
# BUILD_DIR/python must hold the built package (PYTHONPATH is set here).
# FBUF_DEMO_FRAMES sets the frame count (default 60; the Python checksum
# costs about 10 ms per 640x360 frame). PYTHON picks the interpreter
# (default /usr/bin/python3).
set -uo pipefail

build=${1:?usage: demo.sh BUILD_DIR}
here=$(cd "$(dirname "$0")" && pwd)
frames=${FBUF_DEMO_FRAMES:-60}
python=${PYTHON:-/usr/bin/python3}
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
cxx_producer="$build/examples/fbuf_producer"
cxx_consumer="$build/examples/fbuf_consumer"
for bin in "$cxx_producer" "$cxx_consumer"; do
  [[ -x "$bin" ]] || { echo "demo.sh: $bin not found" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/fbuf-pydemo.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
failed=0

# start LABEL COMMAND...: runs COMMAND in the background, output to $work/LABEL.log.
start() {
  local label=$1
  shift
  "$@" >"$work/$label.log" 2>&1 &
  pids+=("$!")
  eval "pid_${label//-/_}=$!"
}

# finish LABEL: waits for it and prints its output; a failure is counted.
finish() {
  local label=$1 pid status
  eval "pid=\$pid_${label//-/_}"
  wait "$pid"
  status=$?
  sed "s/^/  [$label] /" "$work/$label.log"
  if [[ $status -ne 0 ]]; then
    echo "FAIL: $label exited with status $status"
    failed=1
  fi
}

checksum_of() {
  grep -o 'checksum=[0-9a-f]*' "$work/$1.log" | tail -n 1 | cut -d= -f2
}

# same LABEL PRODUCER: LABEL's checksum must be PRODUCER's.
same() {
  local got expected
  got=$(checksum_of "$1")
  expected=$(checksum_of "$2")
  if [[ -z "$expected" || "$got" != "$expected" ]]; then
    echo "FAIL: $1 checksum '$got' differs from $2's '$expected'"
    failed=1
  else
    echo "ok: $1 checksum $got matches $2's"
  fi
}

echo "== C++ producer -> Python consumer, $frames frames"
service="fbuf-pydemo-$$/cxx-to-py"
start cxx-producer "$cxx_producer" --service "$service" --count "$frames"
start py-consumer "$python" "$here/consumer.py" --service "$service" --connect-timeout 20
finish cxx-producer
finish py-consumer
same py-consumer cxx-producer

echo "== Python producer -> C++ consumer, $frames frames"
service="fbuf-pydemo-$$/py-to-cxx"
start py-producer "$python" "$here/producer.py" --service "$service" --count "$frames"
start cxx-consumer "$cxx_consumer" --service "$service" --connect-timeout 20
finish py-producer
finish cxx-consumer
same cxx-consumer py-producer

echo "== Python producer (read-only policy) -> Python and C++ consumers, $frames frames"
service="fbuf-pydemo-$$/fan-out"
start py-producer2 "$python" "$here/producer.py" --service "$service" --count "$frames" \
  --receivers 2 --policy read-only
start py-consumer2 "$python" "$here/consumer.py" --service "$service" --connect-timeout 20
start cxx-consumer2 "$cxx_consumer" --service "$service" --connect-timeout 20
finish py-producer2
finish py-consumer2
finish cxx-consumer2
same py-consumer2 py-producer2
same cxx-consumer2 py-producer2

pids=()
if [[ $failed -ne 0 ]]; then
  echo "python demo: FAILED"
  exit 1
fi
echo "python demo: all checksums match"
