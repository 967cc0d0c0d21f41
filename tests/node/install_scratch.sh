#!/usr/bin/env bash
# install_scratch.sh: in a scratch project, `npm install <path-to-the-tree>` then
# require("kernelhost") runs a cell. Usage: install_scratch.sh SRC
set -euo pipefail
src=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --prefer-offline --no-audit --no-fund "$src" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
# Both modes; worker mode through the default lookup (kernelhost-worker beside the addon).
unset KH_WORKER_PATH
out=$(node -e '
  const { KernelManager, KernelMode } = require("kernelhost");
  (async () => {
    const m = new KernelManager();
    for (const mode of [KernelMode.MAIN_THREAD, KernelMode.WORKER]) {
      const id = await m.createKernel({ mode });
      const r = await m.getKernel(id).execute("6 * 7");
      process.stdout.write(r.result.data["text/plain"] + " ");
    }
    await m.close();
  })();')
[[ "$out" == "42 42 " ]] || { echo "unexpected output: $out"; exit 1; }
echo "installed into a scratch project and ran a cell in both modes"
