# tests/jupyter/tests.cmake: the Jupyter wire-protocol suite (tests/jupyter/README.md), Python
# with Debian's jupyter_client, pyzmq and nbclient, against kernelspecs of kernelhost-jupyter.
#   jupyter/kernelspec_install   the fixture: kernelhost-test (worker) and kernelhost-test-main
#                                (main_thread) installed into <build>/jupyter-prefix
#   jupyter/<area>               the tests of tests/jupyter/test_<area>.py against kernelhost-test,
#                                sharing one kernel as run.py runs them (KH_JUPYTER_CTEST=module,
#                                the default), or jupyter/<test>, one entry per test, each with a
#                                kernel of its own (KH_JUPYTER_CTEST=test: twice the time, since
#                                every entry starts Python, jupyter_client and a kernel)
#   jupyter-main/...             the same against kernelhost-test-main
#   jupyter-ipykernel/suite      the whole suite against Debian's ipykernel ("python3"), the
#                                reference every test must pass against, one kernel per module
#   jupyter-asan/suite           the whole suite against kernelhost-jupyter-asan (KH_ASAN_TESTS)
# Every entry runs with JUPYTER_PATH on the fixture's prefix and a private home (run.py makes
# one per run and removes it): the real home is never read nor written. Skipped (exit 77) when
# jupyter_client, pyzmq or psutil is missing.
set(KH_JUPYTER_DIR ${CMAKE_CURRENT_LIST_DIR})
set(KH_JUPYTER_PREFIX ${CMAKE_BINARY_DIR}/jupyter-prefix)
# matplotlib's font cache, built once per build tree instead of once per private home.
set(KH_JUPYTER_ENV "JUPYTER_PATH=${KH_JUPYTER_PREFIX}/share/jupyter"
    "MPLCONFIGDIR=${CMAKE_BINARY_DIR}/jupyter-mplconfig")

set(KH_JUPYTER_CTEST module CACHE STRING
    "tests/jupyter in ctest: one entry per module (module) or per test (test)")
set_property(CACHE KH_JUPYTER_CTEST PROPERTY STRINGS module test)

# What run.py is given, one per entry: module names (test_<area>), or the test names (the
# jupyter_* methods of tests/jupyter/test_*.py).
file(GLOB kh_jupyter_modules CONFIGURE_DEPENDS ${KH_JUPYTER_DIR}/test_*.py)
set(KH_JUPYTER_UNITS)
foreach(f ${kh_jupyter_modules})
  get_filename_component(mod ${f} NAME_WE)
  if(KH_JUPYTER_CTEST STREQUAL "test")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${f})
    file(STRINGS ${f} defs REGEX "^    def jupyter_[a-z0-9_]+\\(self\\):")
    foreach(d ${defs})
      string(REGEX REPLACE "^    def (jupyter_[a-z0-9_]+)\\(self\\):.*" "\\1" n "${d}")
      list(APPEND KH_JUPYTER_UNITS ${n})
    endforeach()
  else()
    list(APPEND KH_JUPYTER_UNITS ${mod})
  endif()
endforeach()

add_test(NAME jupyter-ipykernel/suite
  COMMAND /usr/bin/python3 ${KH_JUPYTER_DIR}/run.py --kernel python3)
set_tests_properties(jupyter-ipykernel/suite PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "${KH_JUPYTER_ENV}")

if(NOT TARGET kernelhost-jupyter)
  message(STATUS "no kernelhost-jupyter target: only jupyter-ipykernel/suite is registered")
  return()
endif()

set(kh_asan_exe)
if(TARGET kernelhost-jupyter-asan)
  set(kh_asan_exe -DASAN_EXE=$<TARGET_FILE:kernelhost-jupyter-asan>)
endif()
add_test(NAME jupyter/kernelspec_install
  COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:kernelhost-jupyter> -DPREFIX=${KH_JUPYTER_PREFIX}
          ${kh_asan_exe} -P ${KH_JUPYTER_DIR}/install.cmake)
set_tests_properties(jupyter/kernelspec_install PROPERTIES FIXTURES_SETUP kh_jupyter_kernelspecs)

foreach(mode worker main_thread)
  if(mode STREQUAL "worker")
    set(group jupyter)
    set(spec kernelhost-test)
  else()
    set(group jupyter-main)
    set(spec kernelhost-test-main)
  endif()
  foreach(u ${KH_JUPYTER_UNITS})
    string(REGEX REPLACE "^test_" "" n ${u})  # jupyter/execute for test_execute
    add_test(NAME ${group}/${n}
      COMMAND /usr/bin/python3 ${KH_JUPYTER_DIR}/run.py --kernel ${spec} ${u})
    set_tests_properties(${group}/${n} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
      FIXTURES_REQUIRED kh_jupyter_kernelspecs
      ENVIRONMENT "${KH_JUPYTER_ENV};KH_JUPYTER_MODE=${mode}")
  endforeach()
endforeach()

# The executable on the ASan + UBSan core (KH_ASAN_TESTS), worker mode: the whole suite once, one
# kernel per module, so that what odd or hostile peers send (forged messages, binary buffers,
# interrupts, shutdowns) is checked for memory errors and leaks at the kernel's exit; a report
# makes the kernel exit non-zero, which the tests see.
if(TARGET kernelhost-jupyter-asan)
  set(kh_asan_env ${KH_JUPYTER_ENV} KH_JUPYTER_MODE=worker
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
      LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tests/c/lsan.supp:print_suppressions=0)
  add_test(NAME jupyter-asan/suite
    COMMAND /usr/bin/python3 ${KH_JUPYTER_DIR}/run.py --kernel kernelhost-test-asan)
  set_tests_properties(jupyter-asan/suite PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
    FIXTURES_REQUIRED kh_jupyter_kernelspecs ENVIRONMENT "${kh_asan_env}")
endif()
