#!/usr/bin/env bash
# Installs the fbuf build into a temporary prefix, then configures, builds
# and runs the project in find_package/ against that installation, the way
# a user outside the tree would: without Cap'n Proto, then with the
# project's own find_package(CapnProto) before and after find_package(fbuf)
# (Debian 12's CapnProto package fails when found twice, so fbuf's package
# must never find it). Whether the build is shared or static, the installed
# package says for itself. It configures that project with the generator
# and build tool of the build that runs it (Ninja under build.sh), so it
# needs no tool that build didn't (CMake's default generator would want
# `make`).
#
# usage: find_package_test.sh CMAKE BUILD_DIR PROJECT_DIR C_COMPILER CXX_COMPILER
#                             GENERATOR MAKE_PROGRAM [SANITIZE]
set -euo pipefail

cmake_bin=$1
build_dir=$2
project_dir=$3
c_compiler=$4
cxx_compiler=$5
generator=$6
make_program=$7
sanitize=${8:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/fbuf-find-package.XXXXXX")
trap 'rm -rf "$work"' EXIT

flags=()
if [[ -n "$sanitize" ]]; then
  san=${sanitize//;/,}
  flags+=("-DCMAKE_CXX_FLAGS=-fsanitize=$san -fno-omit-frame-pointer"
          "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=$san")
fi

echo "== install $build_dir into $work/prefix"
"$cmake_bin" --install "$build_dir" --prefix "$work/prefix"

lib=$(find "$work/prefix" \( -name 'libfbuf.so.0' -o -name 'libfbuf.a' \) -print -quit)
echo "installed library: ${lib#"$work/prefix/"}"
# Cap'n Proto is private: no installed header includes it, except the
# optional typed adapters in fbuf/typed/ (which a user includes only to use
# Cap'n Proto), and no other header includes those; fbuf's CMake package
# never finds it.
if grep -rlE '#include [<"](capnp|kj)/' --exclude-dir=typed "$work/prefix/include"; then
  echo "FAIL: an installed header includes Cap'n Proto" >&2
  exit 1
fi
if grep -rlE '#include [<"]fbuf/typed/' --exclude-dir=typed "$work/prefix/include"; then
  echo "FAIL: an installed header includes an optional typed adapter" >&2
  exit 1
fi
if [[ ! -f "$work/prefix/include/fbuf/typed/capnp.h" ]]; then
  echo "FAIL: fbuf/typed/capnp.h is not installed" >&2
  exit 1
fi
if grep -rlE '^[^#]*(find_package|find_dependency)\(CapnProto' --include='*.cmake' "$work/prefix"; then
  echo "FAIL: fbuf's CMake package finds CapnProto" >&2
  exit 1
fi

# `no`: the project never finds Cap'n Proto (with the shared library no
# CapnProto target exists at all).
for order in no before after; do
  if [[ $order == no ]]; then
    echo "== configure $project_dir: find_package(fbuf) alone"
  else
    echo "== configure $project_dir: find_package(CapnProto) $order find_package(fbuf)"
  fi
  "$cmake_bin" -S "$project_dir" -B "$work/build-$order" -G "$generator" \
    -DCMAKE_MAKE_PROGRAM="$make_program" \
    -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DCMAKE_C_COMPILER="$c_compiler" -DCMAKE_CXX_COMPILER="$cxx_compiler" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFBUF_SMOKE_CAPNP="$order" "${flags[@]}"
  # The project must have found this installation, not another one.
  fbuf_dir=$(sed -n 's/^fbuf_DIR:PATH=//p' "$work/build-$order/CMakeCache.txt")
  if [[ "$fbuf_dir" != "$work/prefix/"* ]]; then
    echo "FAIL: find_package(fbuf) found '$fbuf_dir', not the installation in $work/prefix" >&2
    exit 1
  fi

  echo "== build"
  "$cmake_bin" --build "$work/build-$order"

  echo "== run"
  "$work/build-$order/fbuf_find_package_smoke"
  if [[ "$lib" == *.so.0 ]]; then
    # The shared library it ran against: the installed one.
    loaded=$(ldd "$work/build-$order/fbuf_find_package_smoke" | sed -n 's/.*libfbuf.so.0 => \([^ ]*\).*/\1/p')
    if [[ "$(readlink -f "$loaded")" != "$(readlink -f "$lib")" ]]; then
      echo "FAIL: the program loads libfbuf.so.0 from '$loaded', not $lib" >&2
      exit 1
    fi
  fi
done
echo "find_package test: ok (without Cap'n Proto, and with it found before and after fbuf)"
