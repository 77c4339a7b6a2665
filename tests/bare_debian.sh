#!/usr/bin/env bash
# Runs the README's quick start in a brand-new minimal Debian 12 root, to
# prove that build.sh installs everything the demo and the whole test suite
# need (CI's machine has more installed than a fresh one does).
#
#   tests/bare_debian.sh [MIRROR]
#
# As root, on a Debian machine with debootstrap and git: makes a new root
# with `debootstrap --variant=minbase bookworm` from MIRROR (default: the
# Debian mirror this machine's apt uses), mounts /proc, /sys (read-only), a
# private /dev, /dev/pts, /dev/shm and /tmp in it, puts a clean copy of the
# repository's HEAD (git archive: committed files only) in /root/fbuf, and
# runs there, through chroot with a clean environment:
#
#   ./build.sh demo
#   ./build.sh test
#
# Prints the time of each stage and a closing line; exits non-zero if a
# stage fails. Nothing is cached: every run starts from a new root, which is
# unmounted and removed on any exit. The root lives in ${TMPDIR:-/var/tmp}
# and needs about 2 GB there while the suite runs.
set -euo pipefail

die() { echo "bare_debian: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, mount, chroot)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
command -v git >/dev/null || die "git is missing: apt-get install git"

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
readme_cmds=("./build.sh demo" "./build.sh test")
for c in "${readme_cmds[@]}"; do
  grep -q "^$c " "$repo/README.md" ||
    die "README.md's quick start no longer has '$c'; update this script to match it"
done

# The mirror of the first enabled `bookworm` source of this machine's apt
# (one-line .list files and deb822 .sources files).
host_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                       if ($(i + 1) == "bookworm") { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (deb && suite && enabled && uri != "") print uri
                            deb = suite = 0; enabled = 1; uri = "" }
         BEGIN { enabled = 1 }
         /^[[:space:]]*$/ { flush(); next }
         /^#/ { next }
         tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
         tolower($1) == "uris:" { uri = $2 }
         tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
         tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
         END { flush() }' "$f"
  done
}
mirror=${1:-$(host_mirror | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "${TMPDIR:-/var/tmp}/fbuf-bare.XXXXXX")
root=$work/root

# Ends what still runs inside the root, unmounts everything under it (deepest
# first) and removes it. /dev in the root is a tmpfs of its own, never the
# host's, and rm stays on one file system, so a failed unmount cannot reach
# the host's files.
cleanup() {
  local status=$? p mounts
  trap - EXIT INT TERM
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  mounts=$(awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo |
           sort -r)
  for p in $mounts; do
    umount "$p" 2>/dev/null || umount -l "$p" || true
  done
  if awk -v r="$root" '$5 == r || index($5, r "/") == 1 { found = 1 } END { exit !found }' \
       /proc/self/mountinfo; then
    echo "bare_debian: something is still mounted under $root; left $work in place" >&2
  else
    rm -rf --one-file-system "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stage_names=()
stage_times=()
stage_start=0
begin() { echo "== bare_debian: $1"; stage_start=$(date +%s); }
end() {
  local s=$(( $(date +%s) - stage_start ))
  stage_names+=("$1")
  stage_times+=("$s")
  echo "== bare_debian: $1 took $s s"
}
report() {
  local i
  for i in "${!stage_names[@]}"; do
    printf 'bare_debian: %-12s %6d s\n' "${stage_names[$i]}" "${stage_times[$i]}"
  done
}

begin "debootstrap --variant=minbase bookworm from $mirror into $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$work/debootstrap.log" 2>&1 || {
  tail -n 40 "$work/debootstrap.log"
  die "debootstrap failed"
}
end debootstrap

begin "mounts, network and apt configuration, the repository's HEAD"
# The root a mount point of its own, as / is on a machine: `ip netns exec`
# and `ip -n` (the bridge's veth test) make / a slave mount first, which
# fails on a plain directory. Private, so nothing mounted inside shows
# anywhere else.
mount --bind "$root" "$root"
mount --make-private "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid dev "$root/dev"
for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  read -r dev major minor <<< "$node"
  mknod -m 0666 "$root/dev/$dev" c "$major" "$minor"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"

# What apt in the root needs to reach the mirror the way this machine's apt
# does: name resolution, and any proxy or Release-date settings.
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] || continue
  if grep -qiE 'Acquire::([a-z]+::)?(Proxy|Check-Valid-Until|Check-Date)' "$f"; then
    cp "$f" "$root$f"
    echo "bare_debian: copied $f"
  fi
done
for v in http_proxy HTTP_PROXY; do
  if [ -n "${!v:-}" ]; then
    echo "Acquire::http::Proxy \"${!v}\";" > "$root/etc/apt/apt.conf.d/90host-proxy"
    break
  fi
done

mkdir "$root/root/fbuf"
git -C "$repo" archive --format=tar HEAD | tar -x -C "$root/root/fbuf"
echo "bare_debian: HEAD is $(git -C "$repo" rev-parse --short HEAD)"
end setup

in_root() {
  chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    /bin/bash -c 'cd /root/fbuf && exec "$@"' bash "$@"
}

failed=
for c in "${readme_cmds[@]}"; do
  name=${c#./build.sh }
  begin "$c (in the new root)"
  # In the background, so that a signal to this script ends it (and the
  # trap ends what runs in the root) without waiting for the command.
  # shellcheck disable=SC2086  # the command is words, as the README has it
  in_root $c &
  if ! wait $!; then
    end "$name"
    failed=$c
    break
  fi
  end "$name"
done

report
total=0
for t in "${stage_times[@]}"; do total=$((total + t)); done
if [ -n "$failed" ]; then
  echo "bare_debian: FAILED: '$failed' in a new minimal Debian 12 root (after $total s)"
  exit 1
fi
echo "bare_debian: passed: the README's demo and test commands in a new minimal Debian 12 root ($total s)"
