#!/usr/bin/env bash
# Runs the transport benchmark from an existing build and writes its table
# into results/ (gitignored). Builds nothing.
#
#   bench/run.sh BUILD_DIR [transport_bench options...]
#
# Example:
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release \
#         -DFBUF_BUILD_TESTS=OFF -DFBUF_BUILD_EXAMPLES=OFF
#   cmake --build build-bench --target transport_bench
#   bench/run.sh build-bench
#
# Writes results/transport-<UTC timestamp>.md (the Markdown table, also
# printed) and results/transport-<UTC timestamp>.csv; progress goes to
# stderr. Run it on an otherwise idle machine: the benchmark pins the
# producer and the consumer to two CPUs and every other load shows up in the
# numbers.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

build_dir=$1
shift
bin="$build_dir/bench/transport_bench"
if [[ ! -x "$bin" ]]; then
  echo "run.sh: $bin not found; build the transport_bench target first" >&2
  exit 1
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_dir="$repo_root/results"
mkdir -p "$out_dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
md="$out_dir/transport-$stamp.md"
csv="$out_dir/transport-$stamp.csv"

status=0
"$bin" --csv "$csv" "$@" > "$md" || status=$?
cat "$md"
echo "run.sh: wrote $md and $csv" >&2
exit "$status"
