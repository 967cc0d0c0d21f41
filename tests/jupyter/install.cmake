# tests/jupyter/install.cmake: the ctest fixture jupyter/kernelspec_install. Writes the
# kernelspecs the suite runs against into a fresh PREFIX/share/jupyter/kernels: kernelhost-test
# (worker mode, the default) and kernelhost-test-main (main_thread), and with ASAN_EXE (the
# executable on the ASan core) kernelhost-test-asan.
# cmake -DEXE=<kernelhost-jupyter> -DPREFIX=<dir> [-DASAN_EXE=<kernelhost-jupyter-asan>]
#       -P install.cmake
file(REMOVE_RECURSE ${PREFIX})
function(kh_install exe spec)
  execute_process(COMMAND ${exe} install --prefix ${PREFIX} --name ${spec}
                          --display-name "kernelhost (${spec})" ${ARGN}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${exe} install --name ${spec} failed: ${rc}")
  endif()
  if(NOT EXISTS ${PREFIX}/share/jupyter/kernels/${spec}/kernel.json)
    message(FATAL_ERROR "no ${PREFIX}/share/jupyter/kernels/${spec}/kernel.json")
  endif()
endfunction()
kh_install(${EXE} kernelhost-test)
kh_install(${EXE} kernelhost-test-main --options "{\"mode\":\"main_thread\"}")
if(ASAN_EXE)
  kh_install(${ASAN_EXE} kernelhost-test-asan)
endif()
