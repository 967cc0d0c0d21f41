# tests/remote/tests.cmake: the remote backend's checks that are no layer's test (the C, Lua and
# Node suites have their own remote_* tests, each starting tests/remote/gateway.py).
# remote/node_one_libuv: a remote kernel run through the Node addon binds every uv_* symbol of
# libwebsockets' libuv plugin to node's own libuv (one_libuv.py says why that needs checking).
if(TEST node/build)
  add_test(NAME remote/node_one_libuv
    COMMAND ${KH_PYTHON_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/remote/one_libuv.py ${CMAKE_SOURCE_DIR})
  set_tests_properties(remote/node_one_libuv PROPERTIES TIMEOUT 180
    FIXTURES_REQUIRED kh_node_addon RESOURCE_LOCK kh_node_addon_dir)
endif()

# The C suite's remote_* tests serve kernelhost-jupyter's own kernelspec from their loopback
# Jupyter Server too (remote_options_passed_to_kernelhost): KH_JUPYTER_EXE names it.
if(TARGET kernelhost-jupyter)
  foreach(n ${KH_C_TEST_NAMES})
    if(n MATCHES "^remote_")
      foreach(p c asan)
        if(TEST ${p}/${n})
          set_property(TEST ${p}/${n} APPEND PROPERTY ENVIRONMENT
            "KH_JUPYTER_EXE=$<TARGET_FILE:kernelhost-jupyter>")
        endif()
      endforeach()
    endif()
  endforeach()
endif()
