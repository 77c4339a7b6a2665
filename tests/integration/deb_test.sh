#!/usr/bin/env bash
# The Debian packages, end to end: builds fbuf_<version>_<arch>.deb and
# fbuf-dev_<version>_<arch>.deb from the build with cpack, installs them
# with `apt-get install ./...deb` as a user would, then, against that system
# installation only, builds the find_package/ project through
# find_package(fbuf) and the C peer through `pkg-config --cflags --libs
# fbuf`, and has the C program send frames to the C++ one in another
# process. When the build has the Python binding, python3-fbuf_...deb is
# checked, installed and imported by /usr/bin/python3 too. The packages are
# purged again on any exit.
#
# It changes the machine, so it needs root, and CTest runs it under the
# resource lock `fbuf_installed` with the other tests that install or find
# fbuf. Exit 77 (CTest: skipped) when it cannot run here: not root, no
# apt-get, or fbuf already installed (it would not remove a user's fbuf).
# It does not run apt-get update: if apt-get cannot resolve the packages'
# dependencies, it fails and says so.
#
# usage: deb_test.sh CMAKE CPACK BUILD_DIR PROJECT_DIR C_COMPILER CXX_COMPILER
#                    GENERATOR MAKE_PROGRAM
set -euo pipefail
cmake_bin=$1
cpack_bin=$2
build_dir=$3
project_dir=$4
c_compiler=$5
cxx_compiler=$6
generator=$7
make_program=$8
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=installed_lib.sh
source "$here/installed_lib.sh"

skip() { echo "SKIP: $*"; exit 77; }
[[ "$(id -u)" -eq 0 ]] || skip "installing packages needs root"
command -v apt-get > /dev/null && command -v dpkg > /dev/null || skip "no apt-get/dpkg"
for p in fbuf fbuf-dev python3-fbuf; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2> /dev/null || true)
  if [[ "$status" == "install ok installed" ]]; then
    skip "package $p is already installed on this machine; this test would remove it"
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/fbuf-deb.XXXXXX")
installed=0
python_pkg=()  # python3-fbuf, when the build has the Python binding
cleanup() {
  local rc=$?
  if [[ $installed -eq 1 ]]; then
    echo "== apt-get purge fbuf fbuf-dev ${python_pkg[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq -o DPkg::Lock::Timeout=300 \
      fbuf fbuf-dev "${python_pkg[@]}" > "$work/remove.log" 2>&1 || { cat "$work/remove.log"; rc=1; }
    if [[ -e /usr/lib/cmake/fbuf/fbufConfig.cmake ]]; then
      echo "FAIL: fbuf's files are still installed after apt-get purge" >&2
      rc=1
    fi
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

echo "== cpack: the Debian packages of $build_dir"
"$cpack_bin" --config "$build_dir/CPackConfig.cmake" -G DEB -B "$work/debs" > "$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; echo "FAIL: cpack" >&2; exit 1; }
cd "$work/debs"
runtime=(fbuf_*.deb)
dev=(fbuf-dev_*.deb)
[[ -f "${runtime[0]}" && -f "${dev[0]}" ]] || { ls -l; echo "FAIL: cpack made no fbuf and fbuf-dev .deb" >&2; exit 1; }
# The Python binding's package, when the build made one (FBUF_BUILD_PYTHON).
python_deb=()
shopt -s nullglob
python_deb=(python3-fbuf_*.deb)
shopt -u nullglob
[[ ${#python_deb[@]} -eq 0 ]] || python_pkg=(python3-fbuf)
for deb in "${runtime[0]}" "${dev[0]}" "${python_deb[@]}"; do
  echo "-- $deb"
  dpkg-deb -f "$deb" Package Version Architecture Depends
done
# The runtime package: the shared library and its Debian dependencies.
# (Each output is read whole first: `grep -q` in a pipe could stop its
# writer with SIGPIPE, which pipefail would report as a failure.)
contents=$(dpkg-deb -c "${runtime[0]}")
grep -q 'libfbuf\.so\.0\.' <<< "$contents" || { echo "FAIL: fbuf .deb lacks libfbuf.so.0.*" >&2; exit 1; }
depends=$(dpkg-deb -f "${runtime[0]}" Depends)
grep -q 'libcapnp' <<< "$depends" || { echo "FAIL: fbuf .deb does not depend on Cap'n Proto's runtime" >&2; exit 1; }
depends=$(dpkg-deb -f "${dev[0]}" Depends)
grep -q '^fbuf (= ' <<< "$depends" || { echo "FAIL: fbuf-dev .deb does not depend on fbuf (= version)" >&2; exit 1; }

if [[ ${#python_deb[@]} -gt 0 ]]; then
  contents=$(dpkg-deb -c "${python_deb[0]}")
  grep -q 'usr/lib/python3/dist-packages/fbuf/_fbuf\..*\.so$' <<< "$contents" ||
    { echo "FAIL: python3-fbuf .deb lacks the extension in /usr/lib/python3/dist-packages/fbuf/" >&2; exit 1; }
fi

echo "== apt-get install ./${runtime[0]} ./${dev[0]} ${python_deb[*]/#/./}"
installed=1
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       -o DPkg::Lock::Timeout=300 "./${runtime[0]}" "./${dev[0]}" "${python_deb[@]/#/./}" \
       > "$work/install.log" 2>&1; then
  cat "$work/install.log"
  echo "FAIL: apt-get could not install the packages. If it could not find or resolve a" \
       "dependency, this machine's package index may be missing or old: run" \
       "'apt-get update' and try again." >&2
  exit 1
fi
cd "$work"
dpkg -L fbuf fbuf-dev | grep -E 'libfbuf|fbuf.pc|fbufConfig.cmake|uf\.h$'

# Nothing but the system installation: no prefix paths, no pkg-config path.
unset CMAKE_PREFIX_PATH PKG_CONFIG_PATH LD_LIBRARY_PATH

echo "== find_package(fbuf) against the installed package"
"$cmake_bin" -S "$project_dir" -B "$work/cmake-build" -G "$generator" \
  -DCMAKE_MAKE_PROGRAM="$make_program" \
  -DCMAKE_C_COMPILER="$c_compiler" -DCMAKE_CXX_COMPILER="$cxx_compiler" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFBUF_SMOKE_CAPNP=after -DFBUF_SMOKE_FRAMES="$here" \
  > "$work/cmake-configure.log" 2>&1 || { cat "$work/cmake-configure.log"; exit 1; }
fbuf_dir=$(sed -n 's/^fbuf_DIR:PATH=//p' "$work/cmake-build/CMakeCache.txt")
echo "fbuf_DIR=$fbuf_dir"
[[ "$fbuf_dir" == /usr/* ]] || { echo "FAIL: find_package(fbuf) found '$fbuf_dir', not the package's" >&2; exit 1; }
"$cmake_bin" --build "$work/cmake-build"

echo "== cc ... \$(pkg-config --cflags --libs fbuf) against the installed package"
echo "fbuf.pc: $(pkg-config --path fbuf)"
build_c_peer "$c_compiler" "$work/c_peer" "" ""
for program in "$work/c_peer" "$work/cmake-build/fbuf_find_package_smoke"; do
  loaded=$(ldd "$program" | sed -n 's/.*libfbuf.so.0 => \([^ ]*\).*/\1/p')
  echo "$(basename "$program") loads libfbuf.so.0 from $loaded"
  [[ "$loaded" == /usr/lib/* || "$loaded" == /lib/* ]] ||
    { echo "FAIL: $(basename "$program") does not load the packaged libfbuf.so.0" >&2; exit 1; }
done

echo "== the pkg-config-built C producer -> the find_package-built C++ consumer, 500 frames"
service="fbuf-it/deb-$$"
exchange "$work/c_peer" "$service" 500 "$work/cmake-build/fbuf_find_package_smoke" consume "$service" 500
if [[ ${#python_pkg[@]} -gt 0 ]]; then
  echo "== python3 -c 'import fbuf' against the installed package"
  # Debian's interpreter, nothing on PYTHONPATH: the package's own place.
  env -u PYTHONPATH -u PYTHONHOME /usr/bin/python3 -c '
import fbuf
assert fbuf.__file__.startswith("/usr/lib/python3/dist-packages/fbuf/"), fbuf.__file__
pool = fbuf.Pool("deb", classes=[(4096, 2)])
with fbuf.Sender(pool) as tx:
    rx = tx.connect_local()
    buf = tx.allocate(5, timeout=1)
    buf.write(b"hello")
    tx.send(buf, timeout=1)
    with rx.receive(timeout=1) as view:
        assert bytes(view) == b"hello"
print("python3-fbuf", fbuf.__version__, "from", fbuf.__file__)'
fi
echo "deb test: ok"
