#!/usr/bin/python3
"""tests/remote/one_libuv.py: the Node addon runs one libuv, with remote kernels too.

libwebsockets reaches libuv through its event-library plugin (libwebsockets-evlib_uv.so),
which names the system's libuv.so.1 as a dependency, so in Node that file is mapped. What
matters is that nothing calls into it: every uv_* symbol the plugin (and the addon) uses must
bind to the libuv that node itself exports. This runs a remote kernel through the addon under
the dynamic linker's LD_DEBUG=bindings and checks each binding. Usage: one_libuv.py <repo root>
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

root = sys.argv[1] if len(sys.argv) > 1 else "."
fx = subprocess.Popen(["/usr/bin/python3", os.path.join(root, "tests/remote/gateway.py")],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
info = json.loads(fx.stdout.readline())
script = """
const { KernelManager } = require(%r);
(async () => {
  const m = new KernelManager({ gateway: { url: %r, token: %r } });
  const id = await m.createKernel({ mode: 'remote' });
  const r = await m.getKernel(id).execute('6 * 7');
  if (r.result.data['text/plain'] !== '42') throw new Error(JSON.stringify(r));
  await m.destroyKernel(id);
  await m.close();
})().catch((e) => { console.error(e); process.exit(1); });
""" % (root, info["server_url"], info["token"])
tmp = tempfile.mkdtemp(prefix="kh-one-libuv-")
try:
    env = dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=os.path.join(tmp, "ld"))
    subprocess.run(["node", "-e", script], env=env, check=True, timeout=120)
    bad, plugin = [], 0
    pat = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `(uv_[a-z0-9_]+)'")
    for path in glob.glob(os.path.join(tmp, "ld.*")):
        with open(path, errors="replace") as f:
            for line in f:
                m = pat.search(line)
                if not m:
                    continue
                src, dst, sym = m.groups()
                if "evlib_uv" in src or "kernelhost.node" in src:
                    plugin += "evlib_uv" in src
                    if os.path.basename(dst) != "node":
                        bad.append("%s: %s -> %s" % (sym, src, dst))
    if plugin == 0:
        sys.exit("the libuv event plugin of libwebsockets was never bound: was a remote kernel run?")
    if bad:
        sys.exit("uv_* symbols bound outside node's libuv:\n" + "\n".join(bad))
    print("ok: %d uv_* bindings of libwebsockets' libuv plugin, all to node's own libuv" % plugin)
finally:
    fx.stdin.close()
    fx.wait()
    for p in glob.glob(os.path.join(tmp, "*")):
        os.unlink(p)
    os.rmdir(tmp)
