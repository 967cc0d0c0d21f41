# bindings-node/tests.cmake: registers the Node suite with ctest (included by the top-level
# CMakeLists.txt). node/build runs `npm install` in the source tree (offline-safe: mocha comes
# from npm's cache, and node-gyp uses the installed Node headers instead of downloading them),
# which builds the addon into bindings-node/build/; node/mocha then runs `npm test`.
find_program(KH_NODE node)
find_program(KH_NPM npm)
if(NOT KH_NODE OR NOT KH_NPM)
  message(STATUS "node or npm not found: the Node tests are not registered")
  return()
endif()

# Headers next to the running node (Debian: /usr/include/node): point node-gyp at them so it
# never tries to download a tarball.
get_filename_component(KH_NODE_PREFIX "${KH_NODE}" REALPATH)
get_filename_component(KH_NODE_PREFIX "${KH_NODE_PREFIX}" DIRECTORY)
get_filename_component(KH_NODE_PREFIX "${KH_NODE_PREFIX}" DIRECTORY)
set(KH_NODE_ENV "")
if(EXISTS "${KH_NODE_PREFIX}/include/node/node_api.h")
  list(APPEND KH_NODE_ENV "npm_config_nodedir=${KH_NODE_PREFIX}")
endif()

add_test(NAME node/build
  COMMAND ${KH_NPM} install --prefer-offline --no-audit --no-fund --foreground-scripts
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(node/build PROPERTIES TIMEOUT 900 FIXTURES_SETUP kh_node_addon
  ENVIRONMENT "${KH_NODE_ENV}")

add_test(NAME node/mocha COMMAND ${KH_NPM} test WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(node/mocha PROPERTIES TIMEOUT 900 FIXTURES_REQUIRED kh_node_addon
  ENVIRONMENT "KH_TEST_MODE=main_thread")

# `npm install <path>` from a scratch project, then require("kernelhost").
add_test(NAME node/install_scratch
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/node/install_scratch.sh ${CMAKE_SOURCE_DIR})
set_tests_properties(node/install_scratch PROPERTIES TIMEOUT 900 FIXTURES_REQUIRED kh_node_addon
  ENVIRONMENT "${KH_NODE_ENV}")

# The README's host-function example, run as it is written (a cell drives a host scene).
add_test(NAME node/example_scene COMMAND ${KH_NODE} ${CMAKE_SOURCE_DIR}/examples/node/scene.js)
set_tests_properties(node/example_scene PROPERTIES TIMEOUT 120 FIXTURES_REQUIRED kh_node_addon
  PASS_REGULAR_EXPRESSION "ship now at \\(4\\.5, 1\\.5\\)\nrefused: no entity 99\nok [{] id: 1"
  FAIL_REGULAR_EXPRESSION "Error")

# The same specs in worker mode (parameterised, not copied), with the kernelhost-worker that
# `npm install` built next to the addon: no KH_WORKER_PATH, so the default lookup is tested.
if(EXISTS ${CMAKE_SOURCE_DIR}/core/worker/main.c)
  add_test(NAME node/mocha_worker COMMAND ${KH_NPM} test WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(node/mocha_worker PROPERTIES TIMEOUT 900 FIXTURES_REQUIRED kh_node_addon
    ENVIRONMENT "KH_TEST_MODE=worker")
endif()

# Remote kernels (tests/node/remote.test.js, left out of node/mocha by .mocharc.json): mode
# "remote" does not depend on KH_TEST_MODE, so it runs once, against its own Jupyter Server
# (tests/remote/gateway.py). It only reads bindings-node/build: instead of the lock below it waits
# for node/install_scratch, the one test after node/build that rebuilds it, and then runs beside
# the other Node entries.
add_test(NAME node/remote
  COMMAND ${KH_NODE} ${CMAKE_SOURCE_DIR}/node_modules/mocha/bin/mocha.js
          --config tests/node/.mocharc.remote.json
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(node/remote PROPERTIES TIMEOUT 300 FIXTURES_REQUIRED kh_node_addon
  DEPENDS node/install_scratch)
# remote_options_passed_to_kernelhost: the loopback server serves kernelhost-jupyter's own
# kernelspec too.
if(TARGET kernelhost-jupyter)
  set_tests_properties(node/remote PROPERTIES
    ENVIRONMENT "KH_JUPYTER_EXE=$<TARGET_FILE:kernelhost-jupyter>")
endif()

# Every Node test uses (and node/build and node/install_scratch rebuild) bindings-node/build:
# never run two at once.
foreach(t node/build node/mocha node/install_scratch node/mocha_worker node/example_scene)
  if(TEST ${t})
    set_tests_properties(${t} PROPERTIES RESOURCE_LOCK kh_node_addon_dir)
  endif()
endforeach()
