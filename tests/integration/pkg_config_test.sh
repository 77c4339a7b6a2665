#!/usr/bin/env bash
# Installs the fbuf build into a temporary prefix, builds the C peer
# (c_peer.c) with the C compiler and nothing but `pkg-config --cflags --libs
# fbuf` (`--static` for a static libfbuf), checks what it links, and has it
# send frames to the in-tree C++ peer in another process.
#
# usage: pkg_config_test.sh CMAKE BUILD_DIR C_COMPILER CXX_PEER [SANITIZE]
set -euo pipefail
cmake_bin=$1
build_dir=$2
c_compiler=$3
cxx_peer=$4
sanitize=${5:-}
# shellcheck source=installed_lib.sh
source "$(dirname "$0")/installed_lib.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/fbuf-pkg-config.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== install $build_dir into $work/prefix"
"$cmake_bin" --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
pc=$(find "$work/prefix" -name fbuf.pc)
[[ -n "$pc" ]] || { echo "FAIL: no fbuf.pc installed" >&2; exit 1; }
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir fbuf)
echo "fbuf.pc: $pc; libdir=$libdir"

if [[ -e "$libdir/libfbuf.so.0" ]]; then
  echo "== shared libfbuf: cc ... \$(pkg-config --cflags --libs fbuf)"
  libs=$(pkg-config --libs fbuf)
  if grep -Eq 'capnp|kj|stdc\+\+' <<< "$libs"; then
    echo "FAIL: pkg-config --libs fbuf names fbuf's private dependencies: $libs" >&2
    exit 1
  fi
  # No LD_LIBRARY_PATH: the run path says where the installed library is.
  build_c_peer "$c_compiler" "$work/c_peer" "$sanitize" "" "-Wl,-rpath,$libdir"
  needed=$(needed_libs "$work/c_peer")
  echo "needs: $(tr '\n' ' ' <<< "$needed")"
  grep -qx 'libfbuf.so.0' <<< "$needed" || { echo "FAIL: c_peer does not need libfbuf.so.0" >&2; exit 1; }
  if grep -Eq 'stdc\+\+|capnp|kj' <<< "$needed"; then
    echo "FAIL: c_peer itself needs a C++ library" >&2
    exit 1
  fi
  resolved=$(ldd "$work/c_peer" | sed -n 's/.*libfbuf.so.0 => \([^ ]*\).*/\1/p')
  if [[ "$(readlink -f "$resolved")" != "$(readlink -f "$libdir/libfbuf.so.0")" ]]; then
    echo "FAIL: c_peer loads libfbuf.so.0 from '$resolved', not from $libdir" >&2
    exit 1
  fi
else
  echo "== static libfbuf: cc ... \$(pkg-config --static --cflags --libs fbuf)"
  libs=$(pkg-config --static --libs fbuf)
  for want in -lfbuf -lstdc++ -lcapnp -lkj; do
    grep -q -- "$want" <<< "$libs" || { echo "FAIL: pkg-config --static --libs fbuf lacks $want: $libs" >&2; exit 1; }
  done
  build_c_peer "$c_compiler" "$work/c_peer" "$sanitize" --static
  needed=$(needed_libs "$work/c_peer")
  if grep -q libfbuf <<< "$needed"; then
    echo "FAIL: c_peer needs a shared libfbuf although only the static one is installed" >&2
    exit 1
  fi
fi

echo "== the pkg-config-built C producer -> the C++ peer, 300 frames"
service="fbuf-it/pkg-config-$$"
exchange "$work/c_peer" "$service" 300 "$cxx_peer" consume --service "$service" --count 300 --end 1
echo "pkg-config test: ok"
