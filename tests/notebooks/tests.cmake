# tests/notebooks/tests.cmake: notebooks/compare_smoke, the check that compare.py (the
# ipykernel-versus-kernelhost notebook comparison behind `make nbcompare`) still works: both
# kernels run tests/notebooks/smoke/smoke.ipynb in both modes, every cell must match except the
# one tagged kh-differs, which must differ. It uses the Node addon that node/build builds, and
# exits 77 (a skip, not a pass) when ipykernel, jupyter_client or nbformat is missing.
if(NOT TEST node/build)
  message(STATUS "node not found: notebooks/compare_smoke is not registered")
  return()
endif()

add_test(NAME notebooks/compare_smoke
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/compare.py --check --timeout 60
          ${CMAKE_CURRENT_LIST_DIR}/smoke/smoke.ipynb)
set_tests_properties(notebooks/compare_smoke PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
  FIXTURES_REQUIRED kh_node_addon RESOURCE_LOCK kh_node_addon_dir)
