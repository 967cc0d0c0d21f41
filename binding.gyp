# binding.gyp: builds the Node-API addon (bindings-node/) with the kernelhost core compiled in.
# Python and jansson come from pkg-config (Debian's python3-embed); libuv is NOT linked: the
# core compiles against Node's own uv.h and uses the libuv that the node binary exports.
#
# `npm install` builds it through bindings-node/binding.gyp (which includes this file), so the
# output lands in bindings-node/build/: node-gyp run here would wipe ./build, where CMake trees
# live. Commands (<!(...)) run in the including file's directory: kh_rel is the repository
# seen from there ("." or ".."), used for sources; action inputs/outputs use absolute paths.
#
# The core's sources come from core/sources.txt, the one list CMake reads too, through
# bindings-node/tools/core-sources.js. The worker executable: the kernelhost-worker target.
{
  "variables": {
    "variables": {
      "kh_rel%": "<!(node -p \"require('fs').existsSync('core/include/kernelhost.h') ? '.' : '..'\")",
    },
    "kh_rel%": "<(kh_rel)",
    "kh_root": "<!(node -p \"require('path').resolve('<(kh_rel)')\")",
    # The [py] section of core/sources.txt, in its order.
    "kh_py_sources": ["<!@(node <(kh_root)/bindings-node/tools/core-sources.js pysources)"],
    "kh_python_executable":
      "<!(pkg-config --variable=prefix python3-embed)/bin/python<!(pkg-config --modversion python3-embed)",
  },
  "target_defaults": {
    "include_dirs": ["<(kh_rel)/core/include", "<(kh_rel)/core/src"],
    "defines": [
      "_GNU_SOURCE",
      "KH_PYTHON_EXECUTABLE=\"<(kh_python_executable)\"",
    ],
    "cflags": ["<!@(pkg-config --cflags python3-embed jansson yajl libseccomp)"],
    "cflags_c": [
      "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
      "-Wno-missing-field-initializers", "-fvisibility=hidden",
      # A call of an undeclared function must fail the build, not the addon's load.
      "-Werror=implicit-function-declaration",
    ],
  },
  "targets": [
    {
      "target_name": "kh_runtime_sources",
      "type": "none",
      "actions": [
        {
          "action_name": "embed_python_runtime",
          # Runs `cmake -DOUT=<out> -DSOURCES=<a.py;b.py;...> -P core/python/embed.cmake`.
          "inputs": [
            "<(kh_root)/bindings-node/tools/embed-runtime.js",
            "<(kh_root)/core/python/embed.cmake",
            "<@(kh_py_sources)",
          ],
          "outputs": ["<(SHARED_INTERMEDIATE_DIR)/kernelhost/runtime_sources.c"],
          "action": ["node", "<@(_inputs)", "<@(_outputs)"],
          "message": "Embedding the kernelhost Python runtime",
        },
      ],
    },
    {
      "target_name": "kernelhost",
      "dependencies": ["kh_runtime_sources"],
      "sources": [
        "<(kh_rel)/bindings-node/src/addon.c",
        "<!@(node <(kh_root)/bindings-node/tools/core-sources.js sources <(kh_rel))",
        "<!@(node <(kh_root)/bindings-node/tools/core-sources.js wire <(kh_rel))",
        "<(SHARED_INTERMEDIATE_DIR)/kernelhost/runtime_sources.c",
      ],
      "defines": ["NAPI_VERSION=8"],
      # No libuv here, ever: Node exports its own; nor libcrypto: the wire server's HMAC and
      # base64 use the OpenSSL that Node exports (its headers come with Node's).
      # libcurl and libwebsockets (remote kernels) bring the system's libssl/libcrypto, the
      # same OpenSSL 3.0 release as Node's own on Debian 12.
      "libraries": ["<!@(pkg-config --libs python3-embed jansson yajl libseccomp libzmq libcurl libwebsockets)", "-ldl",
                    "-lm", "-lpthread"],
    },
    {
      # The worker executable, built next to the addon (bindings-node/build/Release/). It is a
      # standalone program: it links the system libuv (it is no Node addon) and the core.
      "target_name": "kernelhost-worker",
      "type": "executable",
      "dependencies": ["kh_runtime_sources"],
      "sources": [
        "<!@(node <(kh_root)/bindings-node/tools/core-sources.js worker <(kh_rel))",
        "<!@(node <(kh_root)/bindings-node/tools/core-sources.js sources <(kh_rel))",
        "<(SHARED_INTERMEDIATE_DIR)/kernelhost/runtime_sources.c",
      ],
      "libraries": ["<!@(pkg-config --libs python3-embed jansson yajl libseccomp libuv)", "-ldl", "-lm",
                    "-lpthread"],
    },
  ],
}
