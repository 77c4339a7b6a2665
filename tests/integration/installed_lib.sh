# Shared by the tests that use fbuf as installed, the way users do
# (find_package_test.sh, pkg_config_test.sh, deb_test.sh). Sourced, not run.

# The C compiler flags for the given sanitizers ('' or 'address;undefined').
sanitize_flags() {
  local sanitize=$1
  [[ -n "$sanitize" ]] || return 0
  echo "-fsanitize=${sanitize//;/,} -fno-omit-frame-pointer"
}

# Builds tests/integration/c_peer.c with the C compiler alone, taking every
# flag and library from `pkg-config [--static] fbuf`: it names no C++
# library itself.
#   build_c_peer CC OUT SANITIZE STATIC [EXTRA_LINK_FLAGS...]
# STATIC is '--static' or ''.
build_c_peer() {
  local cc=$1 out=$2 sanitize=$3 static=$4
  shift 4
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  local cflags libs
  cflags=$(pkg-config --cflags fbuf)
  libs=$(pkg-config $static --libs fbuf)
  echo "pkg-config $static --cflags --libs fbuf: $cflags $libs"
  # shellcheck disable=SC2046,SC2086  # pkg-config output is a list of words
  "$cc" -std=c11 -Wall -Wextra -Werror $(sanitize_flags "$sanitize") $cflags -I"$here" \
    "$here/c_peer.c" -o "$out" $libs "$@"
}

# The shared libraries a program needs (DT_NEEDED), one a line.
needed_libs() {
  LC_ALL=C readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# Runs a C producer of COUNT frames on SERVICE in the background and the
# consumer command in the foreground; both must succeed. The producer checks
# that every buffer came back, the consumer every frame and the end.
#   exchange PRODUCER SERVICE COUNT CONSUMER_COMMAND...
exchange() {
  local producer=$1 service=$2 count=$3
  shift 3
  "$producer" produce "$service" "$count" &
  local pid=$!
  local consumer_rc=0 producer_rc=0
  "$@" || consumer_rc=$?
  wait "$pid" || producer_rc=$?
  if [[ $consumer_rc -ne 0 || $producer_rc -ne 0 ]]; then
    echo "FAIL: exchange on $service: producer exit $producer_rc, consumer exit $consumer_rc" >&2
    return 1
  fi
}
