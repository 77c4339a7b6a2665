#!/usr/bin/env bash
# Runs peer_bench (fbuf vs iceoryx, Boost.Interprocess message_queue, a Unix
# socket, a pipe, the bare ring floor and memcpy) from a build tree and
# writes results/peers-<UTC time>.{md,csv,svg}; the Markdown report also
# goes to stdout, progress to stderr.
#
#   bench/peers/run.sh BUILD_DIR [peer_bench options...]
#
# Examples:
#   cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release \
#         -DFBUF_BUILD_TESTS=OFF -DFBUF_BUILD_EXAMPLES=OFF
#   bench/peers/run.sh build-release            # the full run, about 2 minutes
#   bench/peers/run.sh build-release --quick    # a smoke run, about 1 minute
#   bench/peers/run.sh build-release --only=fbuf,iceoryx --sizes=64,1M
#
# Builds the peer_bench target if it is missing. The iceoryx cells need the
# Debian packages iceoryx and libiceoryx-posh-dev (RouDi, iox-roudi, is
# started and stopped by the benchmark) and a working /dev/shm; without
# them the report says so and the other transports still run. Run it on an
# otherwise idle machine: producer and consumer are pinned to two CPUs and
# any other load shows up in the numbers (the report marks disturbed cells).
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

build_dir=$1
shift
bin="$build_dir/bench/peers/peer_bench"
if [[ ! -x "$bin" ]]; then
  echo "run.sh: $bin not found; building the peer_bench target" >&2
  cmake --build "$build_dir" --target peer_bench
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ ! -d /dev/shm || ! -w /dev/shm ]]; then
  echo "run.sh: /dev/shm is missing or not writable: iceoryx (RouDi) and message_queue will fail" >&2
fi
exec "$bin" --out-dir "$repo_root/results" "$@"
