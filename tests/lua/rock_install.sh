#!/usr/bin/env bash
# rock_install.sh: `luarocks make` from a clean copy of the tree, offline, into a private rock
# tree; then require("kernelhost") from another directory runs a cell. Usage: rock_install.sh SRC
set -euo pipefail
src=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$src" ls-files -z | (cd "$src" && xargs -0 cp --parents -t "$work") 2>/dev/null ||
  cp -r "$src/." "$work"
cd "$work"
rm -rf build.luarocks
# No network: unshare -n when allowed (root), which proves nothing is fetched.
run=()
if unshare -n true 2>/dev/null; then run=(unshare -n); fi
"${run[@]}" luarocks --lua-version=5.4 make --tree="$work/tree" kernelhost-scm-1.rockspec >"$work/log" 2>&1 ||
  { cat "$work/log"; exit 1; }
so=$(find "$work/tree" -name kernelhost.so | head -n1)
[[ -n "$so" ]] || { echo "kernelhost.so was not installed"; exit 1; }
[[ -x "$(dirname "$so")/kernelhost-worker" ]] || { echo "kernelhost-worker was not installed"; exit 1; }
cd /
# Both modes, and worker mode through the default lookup (next to the module): no override.
unset KH_WORKER_PATH
out=$(LUA_CPATH="$(dirname "$so")/?.so;;" lua5.4 -e '
  local kh = require("kernelhost")
  local m = kh.KernelManager.new()
  for _, mode in ipairs{ kh.KernelMode.MAIN_THREAD, kh.KernelMode.WORKER } do
    local id = assert(m:create_kernel{ mode = mode })
    local r = m:get_kernel(id):execute("6 * 7")
    io.write(r.result.data["text/plain"], " ")
  end
  m:close()')
[[ "$out" == "42 42 " ]] || { echo "unexpected output: $out"; exit 1; }
echo "rock installed offline and ran a cell in both modes"
