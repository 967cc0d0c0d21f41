// server.js: the notebook page's server: Node's http for the page and its files, a WebSocket
// (ws) per browser tab that drives kernelhost kernels, .ipynb files read and written in one
// folder. Everything runs on Node's loop; `node examples/notebook/server.js [folder]`.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const fsp = require('node:fs/promises');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { WebSocketServer } = require('ws');
const { KernelManager, KernelMode } = require('../..');

const STATIC = path.join(__dirname, 'static');

// What the page may load besides its own files: the browser builds of the libraries it uses,
// served from node_modules (nothing comes from a CDN). URL prefix -> directory.
function vendorDirs() {
  // Where Node would load the package from (some packages export no package.json to resolve).
  const dir = (pkg, sub) => {
    const base = require.resolve.paths(pkg)
      .find((p) => fs.existsSync(path.join(p, pkg, 'package.json')));
    if (!base) throw new Error(`npm package ${pkg} is missing: run npm install`);
    return path.join(base, pkg, sub);
  };
  return {
    marked: dir('marked', 'lib'),
    dompurify: dir('dompurify', 'dist'),
    ansi_up: dir('ansi_up', ''),
    katex: dir('katex', 'dist'),
  };
}

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf', '.png': 'image/png',
};

// The page runs only its own scripts: output HTML is sanitised (DOMPurify) before it is shown,
// and this policy is the second wall: an inline <script> or on* handler that got through would
// still not run. Styles from outputs (pandas' <style>) are allowed.
const CSP = [
  "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:", "font-src 'self' data:", "connect-src 'self'",
  "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'", "object-src 'none'",
].join('; ');

/**
 * Kernel choices of the picker: id -> {label, options for createKernel}. The sandboxed worker
 * sees only the notebook folder (read + write, its working directory) and has no network nor
 * subprocesses; "best-effort" so that a machine without every Landlock ABI still runs it (the
 * kernel info says which layers are active).
 */
function presets(root, home) {
  return {
    'worker-sandboxed': {
      label: 'worker, sandboxed (this folder only, no network)',
      // HOME is a private scratch folder: matplotlib and jedi keep their caches there.
      options: { mode: KernelMode.WORKER, cwd: root, sandbox: 'best-effort',
        env: { HOME: home, MPLCONFIGDIR: path.join(home, 'matplotlib') },
        permissions: { read: [root, home], write: [root, home], net: false, run: false } },
    },
    worker: { label: 'worker (unconfined)', options: { mode: KernelMode.WORKER, cwd: root } },
    main_thread: { label: 'main_thread (in the server: trusted code)',
      options: { mode: KernelMode.MAIN_THREAD } },
  };
}

/** A client error: sent back to the tab as {ok: false, code, message}, never thrown further. */
class ClientError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function tokenEquals(given, token) {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

function cookieToken(req, name) {
  for (const part of (req.headers.cookie || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      return decodeURIComponent(part.slice(eq + 1).trim());
    }
  }
  return undefined;
}

/** The notebook path `rel` inside `root`, refused when it leaves it or is no .ipynb. */
async function notebookPath(root, rel) {
  if (typeof rel !== 'string' || rel === '' || rel.includes('\0') || path.isAbsolute(rel)) {
    throw new ClientError('EPATH', 'path must be a relative path inside the notebook folder');
  }
  if (!rel.endsWith('.ipynb')) throw new ClientError('EPATH', 'path must end with .ipynb');
  const full = path.resolve(root, rel);
  if (!full.startsWith(root + path.sep)) throw new ClientError('EPATH', 'path leaves the folder');
  // A symlink inside the folder may point out of it: check where the directory really is.
  let dir;
  try {
    dir = await fsp.realpath(path.dirname(full));
  } catch {
    throw new ClientError('ENOENT', `no folder for ${rel}`);
  }
  if (dir !== root && !dir.startsWith(root + path.sep)) {
    throw new ClientError('EPATH', 'path leaves the folder');
  }
  return path.join(dir, path.basename(full));
}

async function listNotebooks(root, dir = root, depth = 0, out = []) {
  const entries = await fsp.readdir(dir, { withFileTypes: true });
  for (const e of entries.sort((x, y) => x.name.localeCompare(y.name))) {
    if (e.name.startsWith('.')) continue;
    const full = path.join(dir, e.name);
    if (e.isFile() && e.name.endsWith('.ipynb')) out.push(path.relative(root, full));
    else if (e.isDirectory() && depth < 3) await listNotebooks(root, full, depth + 1, out);
  }
  return out;
}

/**
 * Starts the server. options: {folder (required), host ('127.0.0.1'), port (0: any), token
 * (random), cullMs (how long a kernel outlives its tab, 60000), maxPayload (bytes of one
 * WebSocket message, 64 MiB), manager (a KernelManager to use; one is made otherwise), log}.
 * Resolves with {url, port, token, server, manager, close()}.
 */
async function startServer(options) {
  const root = await fsp.realpath(path.resolve(options.folder));
  const host = options.host || '127.0.0.1';
  const token = options.token || crypto.randomBytes(24).toString('hex');
  const cullMs = options.cullMs ?? 60000;
  const log = options.log || (() => {});
  const ownManager = !options.manager;
  const manager = options.manager || new KernelManager();
  const home = await fsp.mkdtemp(path.join(os.tmpdir(), 'kernelhost-notebook-'));
  const choices = presets(root, home);
  const vendor = vendorDirs();
  // kernel id -> {owner: connection or null, cull: timer, preset}
  const kernels = new Map();
  let cookieName = 'kh_notebook';

  function authorised(req, url) {
    return tokenEquals(url.searchParams.get('token'), token) ||
      tokenEquals(cookieToken(req, cookieName), token);
  }

  async function serveFile(res, file, extraHeaders = {}) {
    let body;
    try {
      body = await fsp.readFile(file);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
      'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer', ...extraHeaders,
    });
    res.end(body);
  }

  // A file of `dir` named by the URL path `rest`, or null when it would leave dir.
  function inside(dir, rest) {
    const full = path.resolve(dir, '.' + path.posix.normalize('/' + rest));
    return full.startsWith(dir + path.sep) ? full : null;
  }

  const server = http.createServer((req, res) => {
    let url;
    try {
      url = new URL(req.url, 'http://localhost');
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET' }).end();
      return;
    }
    if (!authorised(req, url)) {
      res.writeHead(403, { 'Content-Type': 'text/plain' }).end('403: open the URL with its token');
      return;
    }
    const p = decodeURIComponent(url.pathname);
    if (p === '/' || p === '/index.html') {
      // The token becomes a cookie so that the page's own files and its WebSocket need no
      // token in their URLs; SameSite=Strict keeps other sites' pages from using it.
      serveFile(res, path.join(STATIC, 'index.html'), {
        'Set-Cookie':
          `${cookieName}=${encodeURIComponent(token)}; Path=/; HttpOnly; SameSite=Strict`,
      });
      return;
    }
    let file = null;
    if (p.startsWith('/static/')) file = inside(STATIC, p.slice('/static/'.length));
    const m = /^\/vendor\/([a-z_]+)\/(.+)$/.exec(p);
    if (m && vendor[m[1]]) file = inside(vendor[m[1]], m[2]);
    if (!file) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    serveFile(res, file);
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: options.maxPayload ?? 64 << 20 });

  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {});
    let url;
    try {
      url = new URL(req.url, 'http://localhost');
    } catch {
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    // A page of another origin may open a WebSocket here (browsers allow it): refuse it even
    // when it carries the token.
    const origin = req.headers.origin;
    let sameOrigin = true;
    if (origin !== undefined) {
      try {
        sameOrigin = new URL(origin).host === req.headers.host;
      } catch {
        sameOrigin = false;
      }
    }
    if (url.pathname !== '/ws' || !authorised(req, url) || !sameOrigin) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => connection(ws));
  });

  function send(ws, msg) {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
  }

  function owned(conn, kernelId) {
    const k = typeof kernelId === 'string' ? kernels.get(kernelId) : undefined;
    if (!k || k.owner !== conn) {
      throw new ClientError('KH_ENOTFOUND', `no kernel ${kernelId} in this tab`);
    }
    return manager.getKernel(kernelId);
  }

  function str(msg, key) {
    if (typeof msg[key] !== 'string') throw new ClientError('EINVAL', `${key} must be a string`);
    return msg[key];
  }

  async function destroy(kernelId) {
    const k = kernels.get(kernelId);
    if (!k) return;
    clearTimeout(k.cull);
    kernels.delete(kernelId);
    await manager.destroyKernel(kernelId).catch(() => {});
    log(`kernel ${kernelId} shut down`);
  }

  // Binds kernel `id` to connection `conn`: its status events go to that tab.
  function adopt(conn, id) {
    const k = kernels.get(id);
    clearTimeout(k.cull);
    k.cull = null;
    k.owner = conn;
    conn.kernels.add(id);
  }

  const ops = {
    async hello() {
      return { presets: Object.entries(choices).map(([id, c]) => ({ id, label: c.label })),
        folder: root };
    },
    async list() {
      return { files: await listNotebooks(root) };
    },
    async open(conn, msg) {
      const file = await notebookPath(root, str(msg, 'path'));
      let text;
      try {
        text = await fsp.readFile(file, 'utf8');
      } catch {
        throw new ClientError('ENOENT', `cannot read ${msg.path}`);
      }
      try {
        return { notebook: JSON.parse(text) };
      } catch {
        throw new ClientError('EINVAL', `${msg.path} is not JSON`);
      }
    },
    async save(conn, msg) {
      const file = await notebookPath(root, str(msg, 'path'));
      const nb = msg.notebook;
      if (!nb || typeof nb !== 'object' || nb.nbformat !== 4 || !Array.isArray(nb.cells)) {
        throw new ClientError('EINVAL', 'notebook must be nbformat 4 JSON');
      }
      // Written beside the file, then renamed: a crash never leaves half a notebook.
      const tmp = `${file}.${process.pid}.tmp`;
      await fsp.writeFile(tmp, JSON.stringify(nb, null, 1) + '\n');
      await fsp.rename(tmp, file);
      return { path: path.relative(root, file) };
    },
    async start(conn, msg) {
      const preset = choices[str(msg, 'preset')];
      if (!preset) throw new ClientError('EINVAL', `no kernel preset ${msg.preset}`);
      // binary: "base64": image bytes arrive as base64 strings, the form of the page's data:
      // URLs and of .ipynb files.
      const id = await manager.createKernel({ ...preset.options, binary: 'base64' });
      if (conn.closed) {
        await manager.destroyKernel(id).catch(() => {});
        throw new ClientError('KH_ECLOSED', 'tab closed');
      }
      kernels.set(id, { owner: null, cull: null, preset: msg.preset });
      adopt(conn, id);
      manager.onKernelEvent(id, 'status', (data) => {
        const k = kernels.get(id);
        if (k && k.owner) {
          send(k.owner.ws, { ev: 'status', kernelId: id, state: data.execution_state });
        }
      });
      log(`kernel ${id} started (${msg.preset})`);
      const info = manager.getKernelInfo(id);
      return { kernelId: id, sandbox: info && info.sandbox ? info.sandbox.layers : null };
    },
    // A reloaded tab takes back a kernel its earlier page left (before it is culled).
    async attach(conn, msg) {
      const id = str(msg, 'kernelId');
      const k = kernels.get(id);
      if (!k || (k.owner && !k.owner.closed)) {
        throw new ClientError('KH_ENOTFOUND', `no free kernel ${id}`);
      }
      adopt(conn, id);
      return { kernelId: id, preset: k.preset };
    },
    async shutdown(conn, msg) {
      owned(conn, msg.kernelId);
      conn.kernels.delete(msg.kernelId);
      await destroy(msg.kernelId);
      return {};
    },
    async execute(conn, msg) {
      const kernel = owned(conn, msg.kernelId);
      const code = str(msg, 'code');
      const cellId = str(msg, 'cellId');
      let result;
      for await (const item of kernel.executeStream(code)) {
        if (item.type === undefined) {
          result = item;
        } else if (item.type !== 'status') {
          send(conn.ws,
            { ev: 'output', kernelId: kernel.id, cellId, type: item.type, data: item.data });
        }
      }
      return { status: result.status, executionCount: result.executionCount };
    },
    async interrupt(conn, msg) {
      await owned(conn, msg.kernelId).interrupt();
      return {};
    },
    async restart(conn, msg) {
      await owned(conn, msg.kernelId).restart();
      return {};
    },
    async input(conn, msg) {
      await owned(conn, msg.kernelId).inputReply(str(msg, 'value'));
      return {};
    },
    async complete(conn, msg) {
      const kernel = owned(conn, msg.kernelId);
      const code = str(msg, 'code');
      if (!Number.isInteger(msg.cursorPos) || msg.cursorPos < 0) {
        throw new ClientError('EINVAL', 'cursorPos must be a natural number');
      }
      const r = await kernel.complete(code, msg.cursorPos, { timeout: 5000 });
      return { matches: r.matches, cursorStart: r.cursorStart, cursorEnd: r.cursorEnd };
    },
  };

  function connection(ws) {
    const conn = { ws, kernels: new Set(), closed: false };
    ws.on('error', () => {});
    ws.on('message', (raw, isBinary) => {
      let msg;
      try {
        if (isBinary) throw new Error('binary');
        msg = JSON.parse(raw.toString('utf8'));
      } catch {
        send(ws, { ok: false, code: 'EJSON', message: 'messages are JSON text' });
        return;
      }
      if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
        send(ws, { ok: false, code: 'EINVAL', message: 'a message is a JSON object' });
        return;
      }
      const rid = msg.rid;
      const op = Object.hasOwn(ops, msg.op) ? ops[msg.op] : null;
      if (!op) {
        const message = `unknown op ${String(msg.op).slice(0, 40)}`;
        send(ws, { rid, ok: false, code: 'EOP', message });
        return;
      }
      Promise.resolve()
        .then(() => op(conn, msg))
        .then((reply) => send(ws, { rid, ok: true, ...reply }),
          (err) => send(ws,
            { rid, ok: false, code: err.code || 'EFAIL', message: String(err.message) }));
    });
    ws.on('close', () => {
      conn.closed = true;
      // Its kernels outlive the tab for cullMs (a reload attaches to them again), then go.
      for (const id of conn.kernels) {
        const k = kernels.get(id);
        if (!k || k.owner !== conn) continue;
        k.owner = null;
        k.cull = setTimeout(() => destroy(id), cullMs);
      }
    });
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port || 0, host, resolve);
  });
  const port = server.address().port;
  cookieName = `kh_notebook_${port}`; // cookies ignore ports: one name per server
  const shownHost = host.includes(':') ? `[${host}]` : host;
  const url = `http://${shownHost}:${port}/?token=${token}`;

  async function close() {
    for (const c of wss.clients) c.terminate();
    await new Promise((resolve) => server.close(resolve));
    for (const id of [...kernels.keys()]) await destroy(id);
    if (ownManager) await manager.close();
    await fsp.rm(home, { recursive: true, force: true });
  }

  return { url, port, token, server, manager, close, kernels };
}

function parseArgs(argv) {
  const o = { folder: '.' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port') o.port = Number(val());
    else if (a === '--host') o.host = val();
    else if (a === '--token') o.token = val();
    else if (a === '--cull') o.cullMs = Number(val()) * 1000;
    else if (a === '-h' || a === '--help') o.help = true;
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
    else o.folder = a;
  }
  return o;
}

if (require.main === module) {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`notebook: ${err.message}`);
    process.exit(2);
  }
  if (o.help) {
    console.log('usage: node examples/notebook/server.js [folder] [--port N] [--host ADDR] ' +
      '[--token T] [--cull SECONDS]');
    process.exit(0);
  }
  if (!fs.existsSync(o.folder)) fs.mkdirSync(o.folder, { recursive: true });
  const log = (s) => console.log(`notebook: ${s}`);
  // Port 8890 unless it is taken (or --port says otherwise): then any free one.
  startServer({ ...o, port: o.port ?? 8890, log }).catch((err) => {
    if (err.code !== 'EADDRINUSE' || o.port !== undefined) throw err;
    return startServer({ ...o, port: 0, log });
  }).then((s) => {
    console.log(`kernelhost notebook: ${s.url}`);
    console.log(`notebooks in ${path.resolve(o.folder)}; Ctrl-C stops the server`);
    s.manager.ref();
    const stop = () => s.close().then(() => process.exit(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  }, (err) => {
    console.error(`notebook: ${err.message}`);
    process.exit(1);
  });
}

module.exports = { startServer, presets };
