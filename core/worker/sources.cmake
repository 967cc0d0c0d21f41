# Worker mode: the backend, the frame codec and the sandbox (sandbox.c, with its seccomp layer
# from libseccomp) join the core; kernel.c and manager.c enable their worker hooks with
# KH_HAVE_WORKER. Included by the top-level CMakeLists before the core.
list(APPEND KH_CORE_SOURCES core/src/backend-worker.c core/src/frame.c core/src/sandbox.c)
list(APPEND KH_CORE_DEFS KH_HAVE_WORKER KH_HAVE_LIBSECCOMP)
