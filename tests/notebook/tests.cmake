# tests/notebook/tests.cmake: notebook/browser, the notebook page (examples/notebook) end to end
# in Debian's Chromium (headless, driven by playwright-core; no browser is ever downloaded). It
# uses the Node addon that node/build builds. The server's own tests against a hostile client are
# mocha specs (tests/node/notebook.test.js, in node/mocha).
if(NOT TEST node/build)
  message(STATUS "node not found: notebook/browser is not registered")
  return()
endif()
find_program(KH_CHROMIUM chromium)
if(NOT KH_CHROMIUM)
  message(STATUS "chromium not found (make setup installs it): notebook/browser is not registered")
  return()
endif()

add_test(NAME notebook/browser COMMAND ${KH_NODE} ${CMAKE_CURRENT_LIST_DIR}/browser.js
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(notebook/browser PROPERTIES TIMEOUT 180 FIXTURES_REQUIRED kh_node_addon
  RESOURCE_LOCK kh_node_addon_dir ENVIRONMENT "KH_CHROMIUM=${KH_CHROMIUM}"
  PASS_REGULAR_EXPRESSION "notebook/browser: ok")
