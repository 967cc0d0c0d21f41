# tests/jupyter/tests.cmake: the Jupyter wire-protocol suite (tests/jupyter/README.md), Python
# with Debian's jupyter_client, pyzmq and nbclient, against kernelspecs of kernelhost-jupyter.
#   jupyter/kernelspec_install   the fixture: kernelhost-test (worker) and kernelhost-test-main
#                                (main_thread) installed into <build>/jupyter-prefix
#   jupyter/<test>               each test against kernelhost-test
#   jupyter-main/<test>          each test against kernelhost-test-main
#   jupyter-ipykernel/suite      the whole suite against Debian's ipykernel ("python3"), the
#                                reference every test must pass against, one kernel per module
# Every entry runs with JUPYTER_PATH on the fixture's prefix and a private home (run.py makes
# one per run and removes it): the real home is never read nor written. Skipped (exit 77) when
# jupyter_client, pyzmq or psutil is missing.
set(KH_JUPYTER_DIR ${CMAKE_CURRENT_LIST_DIR})
set(KH_JUPYTER_PREFIX ${CMAKE_BINARY_DIR}/jupyter-prefix)
# matplotlib's font cache, built once per build tree instead of once per private home.
set(KH_JUPYTER_ENV "JUPYTER_PATH=${KH_JUPYTER_PREFIX}/share/jupyter"
    "MPLCONFIGDIR=${CMAKE_BINARY_DIR}/jupyter-mplconfig")

# The test names: the jupyter_* methods of tests/jupyter/test_*.py (run.py takes them one by one).
file(GLOB kh_jupyter_modules CONFIGURE_DEPENDS ${KH_JUPYTER_DIR}/test_*.py)
set(KH_JUPYTER_TESTS)
foreach(f ${kh_jupyter_modules})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${f})
  file(STRINGS ${f} defs REGEX "^    def jupyter_[a-z0-9_]+\\(self\\):")
  foreach(d ${defs})
    string(REGEX REPLACE "^    def (jupyter_[a-z0-9_]+)\\(self\\):.*" "\\1" n "${d}")
    list(APPEND KH_JUPYTER_TESTS ${n})
  endforeach()
endforeach()

add_test(NAME jupyter-ipykernel/suite
  COMMAND /usr/bin/python3 ${KH_JUPYTER_DIR}/run.py --kernel python3)
set_tests_properties(jupyter-ipykernel/suite PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "${KH_JUPYTER_ENV}")

if(NOT TARGET kernelhost-jupyter)
  message(STATUS "no kernelhost-jupyter target: only jupyter-ipykernel/suite is registered")
  return()
endif()

add_test(NAME jupyter/kernelspec_install
  COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:kernelhost-jupyter> -DPREFIX=${KH_JUPYTER_PREFIX}
          -P ${KH_JUPYTER_DIR}/install.cmake)
set_tests_properties(jupyter/kernelspec_install PROPERTIES FIXTURES_SETUP kh_jupyter_kernelspecs)

foreach(mode worker main_thread)
  if(mode STREQUAL "worker")
    set(group jupyter)
    set(spec kernelhost-test)
  else()
    set(group jupyter-main)
    set(spec kernelhost-test-main)
  endif()
  foreach(n ${KH_JUPYTER_TESTS})
    add_test(NAME ${group}/${n}
      COMMAND /usr/bin/python3 ${KH_JUPYTER_DIR}/run.py --kernel ${spec} ${n})
    set_tests_properties(${group}/${n} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
      FIXTURES_REQUIRED kh_jupyter_kernelspecs
      ENVIRONMENT "${KH_JUPYTER_ENV};KH_JUPYTER_MODE=${mode}")
  endforeach()
endforeach()
