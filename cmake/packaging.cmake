# Debian packages by CPack (`./build.sh package`, or `cpack` in a build
# tree configured with -DBUILD_SHARED_LIBS=ON):
#
#   fbuf_<version>_<arch>.deb      component `runtime`: libfbuf.so.0; its
#                                  Depends come from dpkg-shlibdeps
#   fbuf-dev_<version>_<arch>.deb  component `dev`: headers, the libfbuf.so
#                                  link (or libfbuf.a), fbufConfig.cmake,
#                                  fbuf.pc; Depends: fbuf (= <version>)
#   python3-fbuf_<version>_<arch>.deb  component `python`: the Python
#                                  binding (python/), when it is built
#
# One package per install component (CPACK_DEB_COMPONENT_INSTALL). To ship
# something new:
#   - in the fbuf package: install it with COMPONENT runtime (the default
#     for an install() without COMPONENT, see CMAKE_INSTALL_DEFAULT_COMPONENT_NAME);
#   - in a package of its own: install it with COMPONENT <name>, which
#     makes fbuf-<name>_<version>_<arch>.deb, and set its Depends here, e.g.
#       set(CPACK_DEBIAN_<NAME>_PACKAGE_DEPENDS "fbuf (= ${PROJECT_VERSION})")
#     dpkg-shlibdeps adds the Debian libraries its programs link.
# Included last from the top-level CMakeLists.txt: CPack packages the
# components that exist when it is included.
#
# Packages need dpkg-dev (dpkg-shlibdeps) and file; build.sh installs both.

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fbuf)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(FBUF_PACKAGE_CONTACT "fbuf maintainers <maintainers@fbuf.invalid>"
    CACHE STRING "The Maintainer field of the Debian packages")
set(CPACK_PACKAGE_CONTACT "${FBUF_PACKAGE_CONTACT}")
# The file layout is that of the build (GNUInstallDirs), under /usr.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
# Every component declared so far, named here because CPack would make one
# package named fbuf of a lone component (the static build's `dev`).
get_cmake_property(CPACK_COMPONENTS_ALL COMPONENTS)
# <name>_<version>_<arch>.deb, Debian's own naming.
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Per package: the first line is Debian's summary.
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION "zero-copy buffer passing between threads and processes
fbuf moves buffers between threads and processes on Linux without copying
them: memfd pools mapped read-only into receivers, shared-memory descriptor
rings, futex wake-ups. This package holds the shared library.")
set(CPACK_COMPONENT_DEV_DESCRIPTION "zero-copy buffer passing between threads and processes (development files)
The C++20 and C headers of fbuf, its CMake package (find_package(fbuf))
and its pkg-config file (fbuf.pc).")

# Every package's programs and libraries: dpkg-shlibdeps derives the
# Depends (libcapnp-0.9.2, libstdc++6, libc6, ...). GENERATE_SHLIBS writes
# the shlibs file and the ldconfig trigger of the package with libfbuf.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
# A program of another package that links libfbuf.so.0: dpkg-shlibdeps
# finds the library where the build puts it (and leaves the dependency on fbuf to
# that package's DEPENDS, above).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS "${PROJECT_BINARY_DIR}")

# runtime: the shared library.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME fbuf)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)

# dev: everything to build against fbuf.
set(CPACK_DEBIAN_DEV_PACKAGE_NAME fbuf-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
if(BUILD_SHARED_LIBS)
  set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "fbuf (= ${PROJECT_VERSION})")
else()
  # The static library's users link Cap'n Proto themselves (fbuf.pc,
  # fbufConfig.cmake), and there is no runtime package to depend on.
  set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libcapnp-dev, liburing-dev, pkg-config")
endif()

# python: the Python binding (python/), python3-fbuf_<version>_<arch>.deb:
# the package fbuf in /usr/lib/python3/dist-packages/fbuf/. Its extension is
# built for one Python version, the one the build found.
if("python" IN_LIST CPACK_COMPONENTS_ALL)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-fbuf)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
  set(CPACK_COMPONENT_PYTHON_DESCRIPTION "zero-copy buffer passing between threads and processes (Python 3)
The Python binding of fbuf: Pool, Sender, Receiver, and buffers and views
that numpy and memoryview read and write in place, without copying.")
  math(EXPR _fbuf_py_next "${FBUF_PYTHON_VERSION_MINOR} + 1")
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS
      "python3 (>= ${FBUF_PYTHON_VERSION_MAJOR}.${FBUF_PYTHON_VERSION_MINOR}), python3 (<< ${FBUF_PYTHON_VERSION_MAJOR}.${_fbuf_py_next})")
  if(BUILD_SHARED_LIBS)
    string(APPEND CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS ", fbuf (= ${PROJECT_VERSION})")
  endif()
  set(CPACK_DEBIAN_PYTHON_PACKAGE_RECOMMENDS python3-numpy)
endif()

include(CPack)
