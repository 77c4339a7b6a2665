# The peer_bench plot, from the CSV it writes: one row of panels per mode
# (buffers/s, GB/s and one-way p50 latency against the payload size,
# log-log), one line per transport. peer_bench runs it as
#   gnuplot -e "csv='F.csv'; svg='F.svg'; modes='transport touch'; peers='pipe ...'; subtitle='...'" plot.gp
set datafile separator comma
set terminal svg size 1320, 300 * words(modes) + 50 dynamic noenhanced font "sans,10" background rgb "white"
set output svg
set logscale xy
set grid
set pointsize 0.6
set xlabel "payload size (bytes)"
# A cell that ran: its mode and transport, status "ok"; other rows are
# undefined and break no line (each transport's rows are consecutive).
x(m, t) = strcol(1) eq m && strcol(2) eq t && strcol(4) eq "ok" ? column(3) : NaN
set multiplot layout words(modes), 3 title "peer_bench: fbuf vs iceoryx, message_queue, unix socket, pipe (log-log)\n".subtitle
do for [m in modes] {
  unset key
  set title m.": buffers/s (median)"
  plot for [t in peers] csv using (x(m, t)):5 with linespoints title t
  set title m.": GB/s (payload bytes delivered)"
  plot for [t in peers] csv using (x(m, t)):8 with linespoints title t
  set key outside right top font ",9"
  set title m.": one-way latency p50 (us)"
  plot for [t in peers] csv using (x(m, t)):12 with linespoints title t
}
unset multiplot
