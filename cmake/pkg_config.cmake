# fbuf.pc, installed to ${libdir}/pkgconfig with the `dev` component.
#
# The shared library names its own dependencies (libcapnp, libkj, the C++
# runtime) as DT_NEEDED, so a C program links it with `-lfbuf` alone. The
# static library cannot: `pkg-config --static --libs fbuf` adds the C++
# runtime and, through capnp.pc, Cap'n Proto. A shared-only fbuf.pc requires
# nothing, so `pkg-config --cflags` works without Cap'n Proto's .pc files.
if(BUILD_SHARED_LIBS)
  set(FBUF_PC_LIBS_PRIVATE "")
  set(FBUF_PC_REQUIRES_PRIVATE "")
else()
  set(FBUF_PC_LIBS_PRIVATE "-lstdc++ -lm -pthread")
  set(FBUF_PC_REQUIRES_PRIVATE "capnp liburing")
endif()

# The prefix is found from the file's own place (${pcfiledir}), so that an
# installed tree may move (`cmake --install --prefix`, a package built by
# cpack from a tree configured for /usr/local) and the paths stay right.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(FBUF_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(FBUF_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(FBUF_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  # From ${libdir}/pkgconfig up to the prefix: "../.." for lib,
  # "../../.." for lib/x86_64-linux-gnu.
  file(RELATIVE_PATH _fbuf_up "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
  string(REGEX REPLACE "/$" "" _fbuf_up "${_fbuf_up}")
  set(FBUF_PC_PREFIX "\${pcfiledir}/${_fbuf_up}")
  set(FBUF_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(FBUF_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/fbuf.pc.in ${CMAKE_CURRENT_BINARY_DIR}/fbuf.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/fbuf.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
