# Toolchain file of the shipped agent and CLI (scripts/release.sh): this host's g++, with the C
# library and the static libraries of an older Debian as its sysroot (PROBING_SYSROOT: Debian 11,
# glibc 2.31, made by scripts/matrix-chroot.sh bullseye). What is built here runs on that glibc
# and every newer one. The C++ headers and libstdc++.a stay the compiler's own (GCC 12); the
# header-only libraries the sysroot lacks at our versions (nlohmann-json, CLI11) are the host's,
# and so are SQLite (3.38 or newer: sqlite3_vtab_distinct) and elfutils, whose static libraries
# ask nothing of the C library that 2.31 lacks (scripts/release.sh checks every shipped file's
# symbol versions).
if(NOT PROBING_SYSROOT)
  set(PROBING_SYSROOT $ENV{PROBING_SYSROOT})
endif()
# Passed on through the environment to try_compile's runs of this file, which see no -D of ours.
set(ENV{PROBING_SYSROOT} ${PROBING_SYSROOT})
if(NOT PROBING_SYSROOT OR NOT IS_DIRECTORY "${PROBING_SYSROOT}/usr/include")
  message(FATAL_ERROR "PROBING_SYSROOT (${PROBING_SYSROOT}) is not a sysroot: scripts/matrix-chroot.sh bullseye makes one")
endif()
set(CMAKE_SYSROOT ${PROBING_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# GCC searches its own library directory (the host's /usr/lib/x86_64-linux-gnu) before the
# sysroot's, for libraries (-L) and for the C library's start files (-B: Scrt1.o, crti.o,
# crtn.o). Named first, the sysroot's win: the host's Scrt1.o leaves the running of static
# constructors to glibc 2.34's __libc_start_main, so linked against 2.31 none would run.
set(probing_sysroot_link "-B${PROBING_SYSROOT}/usr/lib/x86_64-linux-gnu/ -L${PROBING_SYSROOT}/usr/lib/x86_64-linux-gnu")
set(CMAKE_EXE_LINKER_FLAGS_INIT ${probing_sysroot_link})
set(CMAKE_SHARED_LINKER_FLAGS_INIT ${probing_sysroot_link})
# The host's header-only libraries, alone in a directory of their own (all of /usr/include would
# bring the host's C library headers).
set(probing_host_headers ${CMAKE_BINARY_DIR}/host-include)
foreach(dir nlohmann CLI sqlite3.h sqlite3ext.h elfutils libelf.h gelf.h nlist.h dwarf.h)
  if(NOT EXISTS ${probing_host_headers}/${dir})
    file(MAKE_DIRECTORY ${probing_host_headers})
    file(CREATE_LINK /usr/include/${dir} ${probing_host_headers}/${dir} SYMBOLIC)
  endif()
endforeach()
set(CMAKE_CXX_FLAGS_INIT "-isystem ${probing_host_headers}")
set(SQLITE3_STATIC /usr/lib/x86_64-linux-gnu/libsqlite3.a CACHE FILEPATH "The host's static SQLite")
# elfutils too: Debian 11's 0.183 lacks dwfl_frame_reg (0.186). C code, whose calls into glibc
# resolve against 2.31 when linked here (probing_link_pkg takes these for libdw and libelf).
foreach(lib dw elf)
  set(PROBING_STATIC_${lib} /usr/lib/x86_64-linux-gnu/lib${lib}.a CACHE FILEPATH "The host's static lib${lib}")
endforeach()
set(ENV{PKG_CONFIG_SYSROOT_DIR} ${PROBING_SYSROOT})
set(ENV{PKG_CONFIG_LIBDIR} "${PROBING_SYSROOT}/usr/lib/x86_64-linux-gnu/pkgconfig:${PROBING_SYSROOT}/usr/share/pkgconfig")
set(PROBING_GLIBC_FLOOR ON CACHE BOOL "Built against an older C library: src/core/glibc_floor.cpp fills in")
