# Unit tests of the ptrace injector (src/inject). Included from tests/unit/CMakeLists.txt.
# They start real processes and ptrace them; they need permission to ptrace one's own children
# (the default outside containers that drop CAP_SYS_PTRACE, see docs/attach.md).
find_package(GTest REQUIRED)
include(GoogleTest)

set(INJECT_FIXTURES ${CMAKE_CURRENT_LIST_DIR}/inject_fixtures)

add_library(inject_probe SHARED ${INJECT_FIXTURES}/inject_probe.cpp)
add_library(inject_bad SHARED ${INJECT_FIXTURES}/inject_bad.cpp)
set_target_properties(inject_probe inject_bad PROPERTIES PREFIX "lib" CXX_VISIBILITY_PRESET default
                      LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
add_executable(inject_target ${INJECT_FIXTURES}/inject_target.cpp)
find_package(Threads REQUIRED)
target_link_libraries(inject_target PRIVATE Threads::Threads)
set_target_properties(inject_target PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

# The interpreter first on PATH (a pyenv build with a shared libpython here), resolved to the
# real executable (pyenv's shim is a shell script), and Debian's static-libpython build.
find_program(INJECT_PYTHON_ON_PATH python3)
set(INJECT_PYTHONS "")
if(INJECT_PYTHON_ON_PATH)
  execute_process(COMMAND ${INJECT_PYTHON_ON_PATH} -c "import sys; print(sys.executable)"
                  OUTPUT_VARIABLE INJECT_PYTHON_REAL OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE INJECT_PYTHON_RC)
  if(INJECT_PYTHON_RC EQUAL 0 AND INJECT_PYTHON_REAL)
    list(APPEND INJECT_PYTHONS ${INJECT_PYTHON_REAL})
  endif()
endif()
if(EXISTS /usr/bin/python3)  # Debian's own (3.11 on Debian 12, 3.13 on 13)
  file(REAL_PATH /usr/bin/python3 INJECT_DEBIAN_PYTHON)
  list(APPEND INJECT_PYTHONS ${INJECT_DEBIAN_PYTHON})
endif()
list(REMOVE_DUPLICATES INJECT_PYTHONS)
string(REPLACE ";" ":" INJECT_PYTHONS_TEXT "${INJECT_PYTHONS}")

add_executable(inject_test ${CMAKE_CURRENT_LIST_DIR}/inject_test.cpp)
set_target_properties(inject_test PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
target_link_libraries(inject_test PRIVATE probing_inject probing_native GTest::gtest_main Threads::Threads)
target_compile_definitions(inject_test PRIVATE
  INJECT_PROBE_LIB="$<TARGET_FILE:inject_probe>"
  INJECT_BAD_LIB="$<TARGET_FILE:inject_bad>"
  INJECT_TARGET_EXE="$<TARGET_FILE:inject_target>"
  INJECT_PYTHONS="${INJECT_PYTHONS_TEXT}")
add_dependencies(inject_test inject_probe inject_bad inject_target)
gtest_discover_tests(inject_test DISCOVERY_TIMEOUT 30 PROPERTIES TIMEOUT 120)
