#!/usr/bin/env bash
# Runs every fuzz target of a build tree configured with -DFBUF_FUZZ=ON
# (docs/fuzzing.md), one after the other, each over its seed corpus plus the
# corpus earlier runs grew, and fails if any target crashes, hangs, leaks or
# breaks an invariant.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS_PER_TARGET [RUNS]
#
# SECONDS_PER_TARGET bounds each target's time (0: no bound); RUNS, if
# given, bounds its executions instead or as well (whichever ends first).
# Prints each target's executions, time and final coverage. Logs go to
# BUILD_DIR/tests/fuzz/logs/, grown corpora to .../corpus/<target>/, and
# a crashing input to .../artifacts/. Reproducers kept in
# tests/fuzz/crashes/<target>/ (inputs of bugs since fixed) are replayed at
# the start of every run.
set -uo pipefail
src=$(cd "$(dirname "$0")" && pwd)

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  sed -n '6,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
build=$1
seconds=$2
runs=${3:-}
dir=$build/tests/fuzz
targets=(handshake descriptors ring owner typed bridge_header)

for t in "${targets[@]}"; do
  if [ ! -x "$dir/fuzz_$t" ] || [ ! -d "$dir/seeds/$t" ]; then
    echo "run.sh: $dir/fuzz_$t or its seeds are missing; build $build with -DFBUF_FUZZ=ON first" >&2
    exit 2
  fi
done
mkdir -p "$dir/logs" "$dir/artifacts"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t"
  log=$dir/logs/fuzz_$t.log
  # -timeout: an input that runs for 25 s is a hang (no input of these
  # targets takes more than milliseconds). -rss_limit_mb bounds a leak.
  args=(-max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$dir/artifacts/fuzz_$t-")
  [ -n "$runs" ] && args+=(-runs="$runs")
  start=$(date +%s)
  corpora=("$dir/corpus/$t" "$dir/seeds/$t")
  [ -d "$src/crashes/$t" ] && corpora+=("$src/crashes/$t")
  "$dir/fuzz_$t" "${args[@]}" "${corpora[@]}" > "$log" 2>&1
  rc=$?
  elapsed=$(( $(date +%s) - start ))

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  final=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)' "$log" | tail -n 1 |
          grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [^ ]+' || true)
  printf 'fuzz_%-12s %12s executions in %5d s  %s\n' "$t" "${execs:-?}" "$elapsed" "$final"
  if [ $rc -ne 0 ]; then
    echo "run.sh: fuzz_$t failed (exit $rc); the end of $log:" >&2
    tail -n 60 "$log" >&2
    failed+=("fuzz_$t")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "run.sh: FAILED: ${failed[*]}; crashing inputs are in $dir/artifacts/" >&2
  exit 1
fi
echo "run.sh: all fuzz targets ran clean"
