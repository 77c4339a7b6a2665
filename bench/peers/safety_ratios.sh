#!/bin/sh
# The protected policies' cost against volatile (docs/results.md, "Cheap
# safety"): ratios within each peer_bench run, for a run before and a run
# after a change, as a Markdown table on stdout and an SVG plot.
#
#   bench/peers/safety_ratios.sh BEFORE.csv AFTER.csv OUT.svg
#
# BEFORE.csv and AFTER.csv are peer_bench CSVs with the cells fbuf-volatile,
# fbuf-read_only, fbuf-copy_on_write, fbuf-thread and ring (both modes).
# Needs awk and gnuplot (Debian gnuplot-nox).
set -eu
[ $# -eq 3 ] || { echo "usage: $0 BEFORE.csv AFTER.csv OUT.svg" >&2; exit 2; }
before=$1 after=$2 out=$3
dat=$(mktemp)
trap 'rm -f "$dat"' EXIT

# One line per size: size, then for each run (before, after) the ratios
#   touch read_only/volatile, touch copy_on_write/volatile,
#   transport read_only/volatile, transport copy_on_write/volatile,
#   transport volatile/ring, transport p50 volatile/ring,
#   touch volatile/ring, transport thread/volatile
ratios() {
  awk -F, '
    NR == 1 { next }
    $4 == "ok" { bps[$1 "," $2 "," $3] = $5; p50[$1 "," $2 "," $3] = $12; sizes[$3] = 1 }
    function r(a, b) { return (a != "" && b != "" && b > 0) ? a / b : "nan" }
    END {
      for (s in sizes) {
        printf "%s %s %s %s %s %s %s %s %s\n", s,
          r(bps["touch,fbuf-read_only," s], bps["touch,fbuf-volatile," s]),
          r(bps["touch,fbuf-copy_on_write," s], bps["touch,fbuf-volatile," s]),
          r(bps["transport,fbuf-read_only," s], bps["transport,fbuf-volatile," s]),
          r(bps["transport,fbuf-copy_on_write," s], bps["transport,fbuf-volatile," s]),
          r(bps["transport,fbuf-volatile," s], bps["transport,ring," s]),
          r(p50["transport,fbuf-volatile," s], p50["transport,ring," s]),
          r(bps["touch,fbuf-volatile," s], bps["touch,ring," s]),
          r(bps["transport,fbuf-thread," s], bps["transport,fbuf-volatile," s])
      }
    }' "$1" | sort -n
}
ratios "$before" > "$dat.b"
ratios "$after" > "$dat.a"
join "$dat.b" "$dat.a" > "$dat"
rm -f "$dat.b" "$dat.a"

echo "| size | touch ro/vol | touch cow/vol | transport ro/vol | transport cow/vol | transport vol/ring | p50 vol/ring | touch vol/ring | thread/cross-process |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk '
  function h(s) { return s >= 1048576 ? s / 1048576 " MiB" : s >= 1024 ? s / 1024 " KiB" : s " B" }
  function f(x) { return x == "nan" ? "-" : sprintf("%.3g", x) }
  { printf "| %s |", h($1); for (i = 2; i <= 9; ++i) printf " %s → %s |", f($i), f($(i + 8)); printf "\n" }' "$dat"

gnuplot <<GP
set terminal svg size 900,420 dynamic font "sans,11"
set output "$out"
set termoption noenhanced
set multiplot layout 1,2
set logscale xy
set xtics ("64 B" 64, "4 KiB" 4096, "64 KiB" 65536, "1 MiB" 1048576, "16 MiB" 16777216)
set xlabel "buffer size"
set grid
set key bottom right
set title "touch: protected / volatile buffers/s"
set ylabel "ratio (same run)"
plot [32:33554432] [0.001:2] \
  "$dat" using 1:2 with linespoints dt 2 lc 1 title "read_only, before", \
  "$dat" using 1:10 with linespoints lc 1 title "read_only, after", \
  "$dat" using 1:3 with linespoints dt 2 lc 2 title "copy_on_write, before", \
  "$dat" using 1:11 with linespoints lc 2 title "copy_on_write, after", \
  0.5 with lines lc 0 dt 3 title "target 0.5"
set title "transport: protected / volatile buffers/s"
plot [32:33554432] [0.0001:2] \
  "$dat" using 1:4 with linespoints dt 2 lc 1 title "read_only, before", \
  "$dat" using 1:12 with linespoints lc 1 title "read_only, after", \
  "$dat" using 1:5 with linespoints dt 2 lc 2 title "copy_on_write, before", \
  "$dat" using 1:13 with linespoints lc 2 title "copy_on_write, after", \
  0.1 with lines lc 0 dt 3 title "target 0.1 (16 MiB)"
unset multiplot
GP
