#!/usr/bin/env bash
# The one entry point for building, demonstrating and testing fbuf on a
# Debian 12 machine. Installs whatever Debian packages are missing (as root,
# or through sudo), then:
#
#   ./build.sh demo       build and run the producer -> consumer pipeline
#   ./build.sh test       the whole suite: unit, multi-process, fault and
#                         example tests; then the same under ASan+UBSan and
#                         under TSan; then every fuzz target for a bounded time
#   ./build.sh quick      only the first of those (one build, one ctest run)
#   ./build.sh bench      the benchmarks (policy costs; fbuf against every peer
#                         transport), tables into results/
#   ./build.sh soak       the long soak run (CTest label `stress`)
#   ./build.sh lab [MIB]  the zero-copy lab: a file (default 256 MiB) served
#                         to a TCP client by every method, over loopback and
#                         a veth pair (root); tables and plot into results/
#   ./build.sh package [DIR]  the Debian packages fbuf_<version>_<arch>.deb,
#                         fbuf-dev_<version>_<arch>.deb and (the Python binding)
#                         python3-fbuf_<version>_<arch>.deb into DIR (default
#                         packages/); install with apt-get install ./DIR/*.deb
#
# Build trees: build/ (RelWithDebInfo, libfbuf shared), build-asan/,
# build-tsan/, build-fuzz/ (libfbuf static), build-package/.
# FBUF_FUZZ_SECONDS (default 60) bounds each fuzz target in `test`.
set -euo pipefail
cd "$(dirname "$0")"

JOBS=$(nproc)
PACKAGES=(g++ cmake ninja-build pkg-config libboost-dev capnproto libcapnp-dev
          libgtest-dev libgmock-dev libbenchmark-dev liburing-dev
          clang libclang-rt-14-dev procps dpkg-dev file
          pybind11-dev python3-dev python3-numpy python3-pytest python3-venv)
# The fbuf command-line tool (cli/).
PACKAGES+=(libcli11-dev libfmt-dev)
# The UCX bridge (bridge/).
PACKAGES+=(libucx-dev iproute2)  # iproute2: the veth test (ip netns)
BENCH_PACKAGES=(iceoryx libiceoryx-posh-dev gnuplot-nox)
# The zero-copy lab's network namespaces and veth pair.
LAB_PACKAGES=(iproute2 gnuplot-nox)

install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "build.sh: installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

configure_and_build() {  # dir, extra cmake args...
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" > "$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j "$JOBS"
}

# build/: the whole suite runs against the shared library (and its tests
# build, install and use the Debian packages); the sanitizer builds link
# the static one, so both kinds are tested.
BUILD_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_SHARED_LIBS=ON)

PASSED_TOTAL=0
run_ctest() {  # dir, extra ctest args...
  local dir=$1
  shift
  local log="$dir.ctest.log"
  ctest --test-dir "$dir" -j "$JOBS" --output-on-failure --timeout 900 -LE stress "$@" 2>&1 | tee "$log"
  local n
  n=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
  PASSED_TOTAL=$((PASSED_TOTAL + ${n:-0}))
}

cmd=${1:-}
case "$cmd" in
  demo)
    install_packages "${PACKAGES[@]}"
    configure_and_build build "${BUILD_ARGS[@]}" -DFBUF_BUILD_BENCH=OFF
    exec bash examples/demo.sh build
    ;;
  quick)
    install_packages "${PACKAGES[@]}"
    configure_and_build build "${BUILD_ARGS[@]}"
    run_ctest build
    ;;
  test)
    install_packages "${PACKAGES[@]}"
    echo "== build/: RelWithDebInfo, libfbuf shared"
    configure_and_build build "${BUILD_ARGS[@]}"
    run_ctest build
    echo "== build-asan/: AddressSanitizer + UndefinedBehaviorSanitizer"
    configure_and_build build-asan -DCMAKE_BUILD_TYPE=Debug -DFBUF_SANITIZE='address;undefined' \
      -DFBUF_BUILD_BENCH=OFF
    run_ctest build-asan
    echo "== build-tsan/: ThreadSanitizer"
    configure_and_build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFBUF_SANITIZE=thread \
      -DFBUF_BUILD_BENCH=OFF
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" run_ctest build-tsan
    if [ -f tests/fuzz/CMakeLists.txt ]; then
      echo "== build-fuzz/: libFuzzer targets, ${FBUF_FUZZ_SECONDS:-60} s each"
      CC=clang CXX=clang++ configure_and_build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFBUF_FUZZ=ON \
        -DFBUF_SANITIZE='address;undefined' -DFBUF_BUILD_TESTS=OFF -DFBUF_BUILD_EXAMPLES=OFF \
        -DFBUF_BUILD_BENCH=OFF
      bash tests/fuzz/run.sh build-fuzz "${FBUF_FUZZ_SECONDS:-60}"
    fi
    echo "build.sh: all test stages passed"
    echo "Summary: $PASSED_TOTAL passed, 0 failed"
    ;;
  bench)
    install_packages "${PACKAGES[@]}" "${BENCH_PACKAGES[@]}"
    configure_and_build build-release -DCMAKE_BUILD_TYPE=Release -DFBUF_BUILD_TESTS=OFF
    mkdir -p results
    build-release/bench/policy_bench | tee "results/policy-$(date -u +%Y%m%dT%H%M%SZ).md"
    # Every transport, both modes: results/peers-<UTC time>.{md,csv,svg}.
    exec build-release/bench/peers/peer_bench
    ;;
  lab)
    install_packages "${PACKAGES[@]}" "${LAB_PACKAGES[@]}"
    configure_and_build build-release -DCMAKE_BUILD_TYPE=Release -DFBUF_BUILD_TESTS=OFF
    exec bash bench/io_lab.sh build-release "${2:-256}" results
    ;;
  soak)
    install_packages "${PACKAGES[@]}"
    configure_and_build build "${BUILD_ARGS[@]}"
    ctest --test-dir build --output-on-failure -L stress
    ;;
  package)
    install_packages "${PACKAGES[@]}"
    out=${2:-packages}
    # The library alone, shared, laid out for /usr (GNUInstallDirs:
    # lib/<multiarch>), then one .deb per install component.
    configure_and_build build-package -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_SHARED_LIBS=ON \
      -DCMAKE_INSTALL_PREFIX=/usr -DFBUF_BUILD_TESTS=OFF -DFBUF_BUILD_EXAMPLES=OFF \
      -DFBUF_BUILD_BENCH=OFF
    mkdir -p "$out"
    cpack --config build-package/CPackConfig.cmake -G DEB -B "$out"
    rm -rf "$out/_CPack_Packages"
    ls -l "$out"/*.deb
    ;;
  *)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
