#!/usr/bin/env bash
# The zero-copy lab (./build.sh lab): serves one file to a TCP client by
# every method of bench/io_lab.cc, over loopback and over a veth pair
# between two network namespaces this script makes (root; the traffic stays
# on this machine), hot and cold cache, two chunk sizes.
#
#   bash bench/io_lab.sh BUILD_DIR [SIZE_MIB] [OUT_DIR]
#
# Writes OUT_DIR/lab-<UTC time>.{csv,md,svg} (default results/, 256 MiB).
# The file lives under /var/tmp (a disk file system: O_DIRECT works and a
# cold read goes to the device). IO_LAB_CHUNKS and IO_LAB_METHODS narrow it.
set -euo pipefail
build=${1:?usage: io_lab.sh BUILD_DIR [SIZE_MIB] [OUT_DIR]}
size_mib=${2:-256}
out=${3:-results}
lab="$build/bench/io_lab"
chunks=${IO_LAB_CHUNKS:-65536,1048576}
methods=${IO_LAB_METHODS:-read_write,mmap_write,sendfile,splice,uring_rw,send_zc,msg_zerocopy,odirect_send,fbuf}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
csv="$out/lab-$stamp.csv"
md="$out/lab-$stamp.md"
svg="$out/lab-$stamp.svg"
file=/var/tmp/fbuf-lab-$$.bin
ns_a=fbuf-lab-a-$$
ns_b=fbuf-lab-b-$$

cleanup() {
  rm -f "$file"
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
}
trap cleanup EXIT

echo "io_lab: ${size_mib} MiB file, chunks $chunks, methods $methods"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$file"
sync "$file"

"$lab" --file "$file" --header --transport loopback --chunks "$chunks" --methods "$methods" \
  2> "$out/lab-$stamp.log" | tee "$csv"

if [ "$(id -u)" -eq 0 ] && command -v ip > /dev/null; then
  # Two namespaces joined by a veth pair: the server in A, the client in B.
  ip netns add "$ns_a"
  ip netns add "$ns_b"
  ip link add "veth-a$$" type veth peer name "veth-b$$"
  ip link set "veth-a$$" netns "$ns_a"
  ip link set "veth-b$$" netns "$ns_b"
  ip -n "$ns_a" addr add 10.77.0.1/24 dev "veth-a$$"
  ip -n "$ns_b" addr add 10.77.0.2/24 dev "veth-b$$"
  ip -n "$ns_a" link set lo up
  ip -n "$ns_b" link set lo up
  ip -n "$ns_a" link set "veth-a$$" up
  ip -n "$ns_b" link set "veth-b$$" up
  ip netns exec "$ns_a" "$lab" --file "$file" --transport veth --host 10.77.0.1 --client-netns "$ns_b" \
    --chunks "$chunks" --methods "$methods" 2>> "$out/lab-$stamp.log" | tee -a "$csv"
else
  echo "io_lab: veth half skipped (needs root and iproute2)" | tee -a "$out/lab-$stamp.log"
fi

# The Markdown table: the columns docs/results.md quotes.
{
  echo "| transport | method | cache | chunk | GiB/s | server CPU s/GiB | client CPU s/GiB | server syscalls/GiB | server vcsw/ivcsw | server minflt/majflt | copies implied | zero-copy sent/copied |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  tail -n +2 "$csv" | awk -F, '{ printf "| %s | %s | %s | %d KiB | %s | %s | %s | %s | %s/%s | %s/%s | %s%s | %s |\n", \
      $1, $2, $3, $4 / 1024, $7, $8, $9, $10, $11, $12, $13, $14, $18, ($19 == "yes" ? "" : " FAILED"), \
      ($20 + $21 > 0 ? $20 "/" $21 : "") }'
  echo
  echo "memcpy on this machine: $(tail -n 1 "$csv" | cut -d, -f17) CPU s/GiB; copies implied = server CPU s/GiB over it."
  echo "Machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)."
} > "$md"
cat "$md"

if command -v gnuplot > /dev/null; then
  dat=$(mktemp)
  tail -n +2 "$csv" | awk -F, '{ printf "%s/%s/%dK/%s %s\n", $1, $3, $4 / 1024, $2, $8 }' > "$dat"
  gnuplot <<GP
set terminal svg size 1400,600 font "sans,10"
set output "$svg"
set title "Server CPU seconds per GiB served (lower is better)"
set style data histogram
set style fill solid 0.8
set boxwidth 0.8
set xtics rotate by -60 font ",8"
set ylabel "CPU s / GiB (user + sys)"
set key off
plot "$dat" using 2:xtic(1)
GP
  rm -f "$dat"
  echo "io_lab: $csv, $md, $svg"
else
  echo "io_lab: $csv, $md (no gnuplot: no plot)"
fi
