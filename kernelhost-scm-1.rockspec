-- kernelhost-scm-1.rockspec: `luarocks --lua-version=5.4 make` (or --lua-version=5.1, for
-- LuaJIT: Neovim, LÖVE) builds the Lua module with the project's CMake (the core linked in
-- statically) and installs kernelhost.so and kernelhost-worker beside it; nothing is fetched
-- from the network. Needs the Debian packages listed in README (libuv1-dev, libjansson-dev,
-- python3-dev, cmake, and liblua5.4-dev, or liblua5.1-0-dev and lua-compat53-dev).
rockspec_format = "3.0"
package = "kernelhost"
version = "scm-1"
source = {
  url = "git+https://github.com/kernelhost/kernelhost.git",
}
description = {
  summary = "Jupyter-grade Python kernels for Lua hosts",
  detailed = [[
    require("kernelhost") gives Lua 5.4 and LuaJIT / Lua 5.1 scripts and host loops real
    CPython kernels (numpy, matplotlib, pandas), with streamed output, rich display data,
    interrupts and an event bus that maps onto Lua callbacks. Blocking calls pump events; manager:fd() and
    manager:timeout() let Neovim, luv or a game loop drive it without a polling timer.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
}
build = {
  type = "command",
  build_command = [[
    cmake -S . -B build.luarocks -DCMAKE_BUILD_TYPE=Release -DKH_ASAN_TESTS=OFF \
      -DLUA_INCDIR="$(LUA_INCDIR)" &&
    cmake --build build.luarocks --target lua_kernelhost kernelhost-worker -j2
  ]],
  install = {
    lib = {
      kernelhost = "build.luarocks/lua/kernelhost.so",
      -- Worker mode: the core looks for kernelhost-worker next to the module that holds it.
      ["kernelhost-worker"] = "build.luarocks/kernelhost-worker",
    },
  },
  copy_directories = {},
}
