#!/usr/bin/env bash
# Installs the fbuf build into a temporary prefix, then configures, builds
# and runs the project in find_package/ against that installation, the way
# a user outside the tree would. It configures that project with the
# generator and build tool of the build that runs it (Ninja under build.sh),
# so it needs no tool that build didn't (CMake's default generator would
# want `make`).
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

echo "== configure $project_dir"
"$cmake_bin" -S "$project_dir" -B "$work/build" -G "$generator" \
  -DCMAKE_MAKE_PROGRAM="$make_program" \
  -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_C_COMPILER="$c_compiler" -DCMAKE_CXX_COMPILER="$cxx_compiler" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "${flags[@]}"

echo "== build"
"$cmake_bin" --build "$work/build"

echo "== run"
"$work/build/fbuf_find_package_smoke"
