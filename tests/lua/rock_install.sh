#!/usr/bin/env bash
# rock_install.sh: `luarocks make` from a clean copy of the tree, offline, into a private rock
# tree; then require("kernelhost") from another directory runs a cell. Usage:
#   rock_install.sh SRC [LUA_VERSION]
# LUA_VERSION is luarocks' --lua-version: 5.4 (the default; run by lua5.4) or 5.1 (built against
# Lua 5.1's headers, run by luajit, the 5.1 that Neovim and LÖVE embed).
set -euo pipefail
src=$1
ver=${2:-5.4}
case $ver in
  5.4) lua=lua5.4 ;;
  5.1) lua=luajit ;;
  *) echo "unknown Lua version $ver"; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$src" ls-files -z | (cd "$src" && xargs -0 cp --parents -t "$work") 2>/dev/null ||
  cp -r "$src/." "$work"
cd "$work"
rm -rf build.luarocks
# No network: unshare -n when allowed (root), which proves nothing is fetched.
run=()
if unshare -n true 2>/dev/null; then run=(unshare -n); fi
"${run[@]}" luarocks --lua-version="$ver" make --tree="$work/tree" kernelhost-scm-1.rockspec >"$work/log" 2>&1 ||
  { cat "$work/log"; exit 1; }
so=$(find "$work/tree" -name kernelhost.so | head -n1)
[[ -n "$so" ]] || { echo "kernelhost.so was not installed"; exit 1; }
[[ -x "$(dirname "$so")/kernelhost-worker" ]] || { echo "kernelhost-worker was not installed"; exit 1; }
cd /
# Both modes, and worker mode through the default lookup (next to the module): no override.
unset KH_WORKER_PATH
out=$(LUA_CPATH="$(dirname "$so")/?.so;;" "$lua" -e '
  local kh = require("kernelhost")
  local m = kh.KernelManager.new()
  for _, mode in ipairs{ kh.KernelMode.MAIN_THREAD, kh.KernelMode.WORKER } do
    local id = assert(m:create_kernel{ mode = mode })
    local r = m:get_kernel(id):execute("6 * 7")
    io.write(r.result.data["text/plain"], " ")
  end
  m:close()')
[[ "$out" == "42 42 " ]] || { echo "unexpected output: $out"; exit 1; }
echo "rock installed offline for Lua $ver and ran a cell in both modes ($lua)"
