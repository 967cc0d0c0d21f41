// remote_bench.js: the remote.* rows of `make bench` (issue 16): create → ready and `1+1` on a
// kernel of a loopback Jupyter Server, through kernelhost's Node binding (mode "remote") and
// through @jupyterlab/services (the client JupyterLab itself uses), against the same server in
// the same process, the two clients alternating.
//
// Usage: node bench/remote_bench.js [starts] [executes] [--json]   (defaults 10 and 500)
//
// The server is tests/remote/gateway.py (Debian's jupyter_server 1.23 with an ipykernel
// kernelspec "python3", every Jupyter directory private to the run); both clients use its
// server_url (the server itself, not the proxy the tests cut) and its token.
//   start    `starts` kernels one after another per client, alternating clients (who goes first
//            swaps each time): from the call to the kernel ready: kernelhost's
//            createKernel({mode: "remote"}) resolving; for @jupyterlab/services,
//            KernelManager.startNew() then the connection "connected", the kernel_info reply in
//            (kernel.info) and the status "idle". Each kernel is then checked to run on the server
//            (its os.getppid() is the server's pid, so a kernel that ran anywhere else fails the
//            side instead of giving a number) and shut down (neither timed).
//   execute  one kernel per client, 50 warm-up cells each, then `executes` timed `1+1` per
//            client in ten alternating blocks: kernelhost's kernel.execute("1+1") resolving;
//            services' requestExecute({code: "1+1"}).done (the execute_reply and the request's
//            idle status, the same two messages kernelhost waits for).
// Prints one JSON line: {"bench": "remote_bench", "server": ..., "services": {"version", "start":
// {"unit": "ms", "samples"}, "execute": {"unit": "us", "samples"}}, "kernelhost": the same or
// {"skip": why}}. A side that cannot run (the addon not built, mode "remote" not in the core) is
// a skip saying why; the other side is still measured.
'use strict';

const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.join(__dirname, '..');
const SYS_PY = '/usr/bin/python3'; // Debian's, with jupyter_server and ipykernel
const WARMUP = 50;
const BLOCKS = 10;
const PPID_CELL = 'import os; os.getppid()';

const now = () => process.hrtime.bigint();
const msSince = (t0) => Number(now() - t0) / 1e6;
const usSince = (t0) => Number(now() - t0) / 1e3;

// The fixture: started once, answers on its stdout; end of its stdin stops it and its kernels.
function startServer() {
  const proc = spawn(SYS_PY, [path.join(ROOT, 'tests', 'remote', 'gateway.py')],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  // Its stderr passes through; the last line names the cause when it cannot start (no
  // python3-jupyter-server, say).
  let lastErr = '';
  readline.createInterface({ input: proc.stderr }).on('line', (line) => {
    process.stderr.write(line + '\n');
    if (line.trim()) lastErr = line.trim();
  });
  const lines = readline.createInterface({ input: proc.stdout });
  const it = lines[Symbol.asyncIterator]();
  return new Promise((resolve, reject) => {
    proc.once('error', reject);
    proc.once('exit', (code) => setImmediate(() => reject(new Error(
      `tests/remote/gateway.py exited ${code}${lastErr ? ': ' + lastErr : ''}`))));
    it.next().then(({ value, done }) => {
      if (done) return;
      let info;
      try {
        info = JSON.parse(value);
      } catch (err) {
        reject(new Error(`tests/remote/gateway.py printed ${JSON.stringify(value)}`));
        return;
      }
      proc.removeAllListeners('exit');
      resolve({ proc, info, stop: () => new Promise((res) => {
        proc.once('exit', res);
        proc.stdin.end();
      }) });
    }, reject);
  });
}

// --- @jupyterlab/services -----------------------------------------------------------------------

function servicesClient(info) {
  const services = require('@jupyterlab/services');
  const WebSocket = require('ws');
  const serverSettings = services.ServerConnection.makeSettings({
    baseUrl: info.server_url.replace(/\/?$/, '/'),
    wsUrl: info.server_url.replace(/^http/, 'ws').replace(/\/?$/, '/'),
    token: info.token,
    appendToken: true,
    WebSocket,
    fetch: globalThis.fetch,
    Request: globalThis.Request,
    Headers: globalThis.Headers,
  });
  const manager = new services.KernelManager({ serverSettings });
  const version = require('@jupyterlab/services/package.json').version;

  // Resolves once `pred()` holds, re-checked on every status or connection status change.
  function until(conn, pred) {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (conn.status === 'dead') {
          done();
          reject(new Error('@jupyterlab/services: the kernel died while starting'));
        } else if (pred()) {
          done();
          resolve();
        }
      };
      const done = () => {
        conn.statusChanged.disconnect(check);
        conn.connectionStatusChanged.disconnect(check);
      };
      conn.statusChanged.connect(check);
      conn.connectionStatusChanged.connect(check);
    });
  }

  return {
    name: '@jupyterlab/services',
    version,
    async open() {
      await manager.ready;
    },
    // -> a kernel that is connected, has answered kernel_info and is idle.
    async start() {
      const conn = await manager.startNew({ name: 'python3' });
      await conn.info;
      await until(conn, () => conn.connectionStatus === 'connected' && conn.status === 'idle');
      return conn;
    },
    async execute(conn) {
      const reply = await conn.requestExecute({ code: '1+1' }).done;
      if (reply.content.status !== 'ok') throw new Error(`1+1: ${reply.content.status}`);
    },
    async ppid(conn) {
      let text = null;
      const future = conn.requestExecute({ code: PPID_CELL });
      future.onIOPub = (msg) => {
        if (msg.header.msg_type === 'execute_result') text = msg.content.data['text/plain'];
      };
      await future.done;
      return text;
    },
    async stop(conn) {
      await conn.shutdown();
      conn.dispose();
    },
    async close() {
      await manager.shutdownAll();
      manager.dispose();
    },
  };
}

// --- kernelhost ----------------------------------------------------------------------------------

function kernelhostClient(info) {
  const { KernelManager } = require('..'); // throws MODULE_NOT_FOUND when the addon is not built
  const manager = new KernelManager({ gateway: { url: info.server_url, token: info.token } });
  return {
    name: 'kernelhost',
    async open() {},
    async start() {
      const id = await manager.createKernel({ mode: 'remote' });
      return manager.getKernel(id);
    },
    async execute(kernel) {
      const r = await kernel.execute('1+1');
      if (r.status !== 'ok') throw new Error(`1+1: ${r.status}`);
    },
    async ppid(kernel) {
      const r = await kernel.execute(PPID_CELL);
      return r.status === 'ok' && r.result ? r.result.data['text/plain'] : null;
    },
    async stop(kernel) {
      await manager.destroyKernel(kernel.id);
    },
    async close() {
      await manager.close();
    },
  };
}

// Throws unless kernel `k` of client `c` is a child of the fixture's server.
async function checkOnServer(c, k, serverPid) {
  const ppid = await c.ppid(k);
  if (ppid !== String(serverPid)) {
    throw new Error(`the kernel does not run on the server (its parent is ${ppid}, the ` +
      `server's pid ${serverPid})`);
  }
}

function why(err) {
  return `${err.code ? err.code + ': ' : ''}${err.message}`.split('\n')[0].slice(0, 300);
}

async function main() {
  const [starts = 10, executes = 500] = process.argv.slice(2).filter((a) => /^\d+$/.test(a))
    .map(Number);
  const server = await startServer();
  const out = { bench: 'remote_bench', server: { url: server.info.server_url }, runs: { starts,
    executes, warmup: WARMUP } };
  try {
    const res = await fetch(server.info.server_url.replace(/\/?$/, '/api/'),
      { headers: { Authorization: `token ${server.info.token}` } });
    out.server.jupyter_server = (await res.json()).version;
  } catch (err) {
    out.server.jupyter_server = `? (${why(err)})`;
  }
  const sides = {};
  for (const [key, make] of [['services', servicesClient], ['kernelhost', kernelhostClient]]) {
    try {
      const c = make(server.info);
      await c.open();
      sides[key] = { client: c, start: [], execute: [] };
      if (c.version) sides[key].version = c.version;
    } catch (err) {
      out[key] = { skip: why(err) };
    }
  }
  // A failing side stops being measured (its skip says why); the other goes on.
  const failed = [];
  const fail = (key, what, err) => {
    out[key] = { skip: `${what}: ${why(err)}` };
    failed.push(sides[key].client);
    delete sides[key];
  };
  const live = () => Object.keys(sides);

  for (let i = 0; i < starts; i++) {
    const order = i % 2 ? live().reverse() : live();
    for (const key of order) {
      const side = sides[key];
      if (!side) continue;
      let k;
      try {
        const t0 = now();
        k = await side.client.start();
        side.start.push(msSince(t0));
        await checkOnServer(side.client, k, server.info.pid);
      } catch (err) {
        fail(key, 'create → ready', err);
        continue;
      }
      try {
        await side.client.stop(k);
      } catch (err) {
        fail(key, 'shutdown', err);
      }
    }
  }

  const kernels = {};
  for (const key of live()) {
    try {
      kernels[key] = await sides[key].client.start();
      await checkOnServer(sides[key].client, kernels[key], server.info.pid);
      for (let i = 0; i < WARMUP; i++) await sides[key].client.execute(kernels[key]);
    } catch (err) {
      fail(key, 'execute warm-up', err);
    }
  }
  for (let b = 0; b < BLOCKS; b++) {
    const n = Math.floor(executes / BLOCKS) + (b < executes % BLOCKS ? 1 : 0);
    const order = b % 2 ? live().reverse() : live();
    for (const key of order) {
      const side = sides[key];
      if (!side) continue;
      try {
        for (let i = 0; i < n; i++) {
          const t0 = now();
          await side.client.execute(kernels[key]);
          side.execute.push(usSince(t0));
        }
      } catch (err) {
        fail(key, 'execute 1+1', err);
      }
    }
  }

  for (const key of live()) {
    const side = sides[key];
    out[key] = { start: { unit: 'ms', samples: side.start },
      execute: { unit: 'us', samples: side.execute } };
    if (side.version) out[key].version = side.version;
    try {
      await side.client.stop(kernels[key]);
      await side.client.close();
    } catch (err) {
      out[key].close_error = why(err);
    }
  }
  for (const c of failed) await c.close().catch(() => {});
  await server.stop();

  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(out));
    return;
  }
  const p50 = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  console.log(`remote kernels on jupyter_server ${out.server.jupyter_server} (loopback), ` +
    `${starts} starts and ${executes} executes per client`);
  for (const key of ['kernelhost', 'services']) {
    const o = out[key];
    const name = key === 'services' ? `@jupyterlab/services ${o.version || ''}` : 'kernelhost';
    if (o.skip) console.log(`  ${name}: not available: ${o.skip}`);
    else {
      console.log(`  ${name}: create → ready p50 ${p50(o.start.samples).toFixed(1)} ms, ` +
        `execute 1+1 p50 ${(p50(o.execute.samples) / 1e3).toFixed(2)} ms`);
    }
  }
}

main().then(() => process.exit(0), (err) => {
  // One line: run.py shows the last line of stderr as the rows' reason.
  console.error(`remote_bench: ${why(err)}`);
  process.exit(1);
});
