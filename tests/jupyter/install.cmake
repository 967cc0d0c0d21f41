# tests/jupyter/install.cmake: the ctest fixture jupyter/kernelspec_install. Writes the two
# kernelspecs the suite runs against into a fresh PREFIX/share/jupyter/kernels:
# kernelhost-test (worker mode, the default) and kernelhost-test-main (main_thread).
# cmake -DEXE=<kernelhost-jupyter> -DPREFIX=<dir> -P install.cmake
file(REMOVE_RECURSE ${PREFIX})
foreach(spec "kernelhost-test" "kernelhost-test-main")
  set(extra)
  if(spec STREQUAL "kernelhost-test-main")
    set(extra --options "{\"mode\":\"main_thread\"}")
  endif()
  execute_process(COMMAND ${EXE} install --prefix ${PREFIX} --name ${spec}
                          --display-name "kernelhost (${spec})" ${extra}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "kernelhost-jupyter install --name ${spec} failed: ${rc}")
  endif()
  if(NOT EXISTS ${PREFIX}/share/jupyter/kernels/${spec}/kernel.json)
    message(FATAL_ERROR "no ${PREFIX}/share/jupyter/kernels/${spec}/kernel.json")
  endif()
endforeach()
