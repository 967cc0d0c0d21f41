// notebook.test.js: the notebook page's server (examples/notebook/server.js) against a hostile
// WebSocket peer: no token, bad JSON, unknown ops and kernels, huge frames, paths out of its
// folder; none of it may crash it, and each is answered. The page itself: tests/notebook.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { assert, MODE } = require('./helpers');
const { startServer } = require('../../examples/notebook/server.js');

const servers = [];
const folders = [];

async function server(options = {}) {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-notebook-'));
  folders.push(folder);
  const lines = [];
  const waiters = [];
  const s = await startServer({
    folder, ...options,
    log: (line) => {
      lines.push(line);
      for (const w of waiters.splice(0)) w();
    },
  });
  servers.push(s);
  /** Resolves once a log line matches re. */
  s.logged = async (re) => {
    while (!lines.some((l) => re.test(l))) await new Promise((r) => waiters.push(r));
  };
  s.folder = folder;
  return s;
}

/** An open client: send(obj or raw), next() = the next message, call(op, args) = its reply. */
function client(s, { token = s.token, headers } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/ws?token=${token}`, { headers });
  const queue = [];
  const waiters = [];
  ws.on('message', (m) => {
    const msg = JSON.parse(m.toString());
    if (waiters.length) waiters.shift()(msg);
    else queue.push(msg);
  });
  let rid = 0;
  const c = {
    ws,
    opened: new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('unexpected-response', (req, res) => reject(Object.assign(new Error('refused'),
        { status: res.statusCode })));
      ws.once('error', reject);
    }),
    closed: new Promise((resolve) => ws.once('close', (code) => resolve(code))),
    send: (x) => ws.send(typeof x === 'string' || Buffer.isBuffer(x) ? x : JSON.stringify(x)),
    next: () => (queue.length ? Promise.resolve(queue.shift())
      : new Promise((r) => waiters.push(r))),
    /** The reply to a request (pushed events before it are skipped). */
    async call(op, args = {}) {
      const id = ++rid;
      c.send({ op, rid: id, ...args });
      for (;;) {
        const msg = await c.next();
        if (msg.rid === id) return msg;
      }
    },
  };
  return c;
}

async function connected(s) {
  const c = client(s);
  await c.opened;
  return c;
}

describe('notebook server', function () {
  afterEach(async () => {
    while (servers.length) await servers.pop().close();
    while (folders.length) fs.rmSync(folders.pop(), { recursive: true, force: true });
  });

  it('notebook_no_token_forbidden the page and the WebSocket need the token', async () => {
    const s = await server();
    const base = `http://127.0.0.1:${s.port}`;
    assert.equal((await fetch(`${base}/`)).status, 403);
    assert.equal((await fetch(`${base}/?token=wrong`)).status, 403);
    assert.equal((await fetch(`${base}/static/notebook.js`)).status, 403);
    const page = await fetch(`${base}/?token=${s.token}`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy'), /script-src 'self'/);
    // The cookie the page set lets its own files load without the token in their URL.
    const cookie = page.headers.get('set-cookie').split(';')[0];
    assert.equal((await fetch(`${base}/static/notebook.js`, { headers: { cookie } })).status, 200);
    await assert.rejects(client(s, { token: '' }).opened, (e) => e.status === 403);
    await assert.rejects(client(s, { token: 'x' + s.token }).opened, (e) => e.status === 403);
    // Another site's page that somehow has the token still cannot open a WebSocket.
    await assert.rejects(client(s, { headers: { Origin: 'http://evil.example' } }).opened,
      (e) => e.status === 403);
    // A path that climbs out of a served folder (sent raw: fetch would normalise it).
    const climb = await new Promise((resolve, reject) => http.get({ host: '127.0.0.1', port: s.port,
      path: `/vendor/katex/..%2F..%2F..%2Fpackage.json?token=${s.token}` },
    (res) => resolve(res.resume().statusCode)).on('error', reject));
    assert.equal(climb, 404);
    const c = await connected(s);
    assert.equal((await c.call('hello')).ok, true);
  });

  it('notebook_invalid_json_answered bad JSON and binary frames: an error, no crash', async () => {
    const s = await server();
    const c = await connected(s);
    for (const bad of ['not json', '{"op":', '\u0000\uffff', '']) {
      c.send(bad);
      assert.deepEqual(await c.next(),
        { ok: false, code: 'EJSON', message: 'messages are JSON text' });
    }
    c.send(Buffer.from([0xff, 0x00, 0x7b]));
    assert.equal((await c.next()).code, 'EJSON');
    for (const bad of ['null', '[]', '42', '"hello"']) {
      c.send(bad);
      assert.equal((await c.next()).code, 'EINVAL');
    }
    assert.equal((await c.call('hello')).ok, true);
  });

  it('notebook_unknown_op_answered unknown ops, prototype names and bad arguments', async () => {
    const s = await server();
    const c = await connected(s);
    for (const op of ['nope', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 42, null]) {
      const r = await c.call(op);
      assert.equal(r.ok, false);
      assert.equal(r.code, 'EOP', `op ${op}`);
    }
    for (const [op, args] of [['start', {}], ['start', { preset: 'nope' }],
      ['start', { preset: { toString: 1 } }], ['open', { path: 42 }], ['save', { path: 'a.ipynb' }],
      ['save', { path: 'a.ipynb', notebook: { nbformat: 3, cells: [] } }]]) {
      const r = await c.call(op, args);
      assert.equal(r.ok, false, `${op} ${JSON.stringify(args)}`);
      assert.equal(r.code, 'EINVAL', `${op} ${JSON.stringify(args)}: ${r.message}`);
    }
    assert.equal((await c.call('hello')).ok, true);
  });

  it('notebook_unknown_kernel_refused unknown ids and another tab\'s kernel', async () => {
    const s = await server();
    const a = await connected(s);
    const b = await connected(s);
    const started = await a.call('start', { preset: MODE });
    assert.equal(started.ok, true, started.message);
    for (const op of ['execute', 'interrupt', 'restart', 'input', 'complete', 'shutdown']) {
      for (const kernelId of ['nope', 42, null, undefined, started.kernelId]) {
        const r = await b.call(op, { kernelId, code: '1', cellId: 'c', value: '', cursorPos: 0 });
        assert.equal(r.code, 'KH_ENOTFOUND', `${op} ${kernelId}`);
      }
    }
    // A tab may not take a kernel whose tab is still open.
    assert.equal((await b.call('attach', { kernelId: started.kernelId })).code, 'KH_ENOTFOUND');
    const bad = await a.call('complete', { kernelId: started.kernelId, code: 'x', cursorPos: -1 });
    assert.equal(bad.code, 'EINVAL');
    const r = await a.call('execute', { kernelId: started.kernelId, cellId: 'c1', code: '6 * 7' });
    assert.deepEqual([r.ok, r.status, r.executionCount], [true, 'ok', 1]);
  });

  it('notebook_huge_frame_closes_connection only that client, the server goes on', async () => {
    const s = await server({ maxPayload: 1 << 20 });
    const c = await connected(s);
    const other = await connected(s);
    c.send(JSON.stringify({ op: 'hello', pad: 'x'.repeat(2 << 20) }));
    assert.equal(await c.closed, 1009);
    assert.equal((await other.call('hello')).ok, true);
    assert.equal((await (await connected(s)).call('hello')).ok, true);
  });

  it('notebook_path_outside_refused open and save stay in the folder', async () => {
    const s = await server();
    const c = await connected(s);
    fs.symlinkSync(os.tmpdir(), path.join(s.folder, 'link'));
    const nb = { nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [] };
    for (const p of ['../x.ipynb', '/etc/x.ipynb', 'x.txt', '', 'a/../../x.ipynb', 'link/x.ipynb',
      'x.ipynb\u0000']) {
      for (const op of ['open', 'save']) {
        const r = await c.call(op, { path: p, notebook: nb });
        assert.equal(r.ok, false, `${op} ${p}`);
        assert.ok(['EPATH', 'ENOENT'].includes(r.code), `${op} ${p}: ${r.code}`);
      }
    }
    assert.equal((await c.call('save', { path: 'in.ipynb', notebook: nb })).ok, true);
    assert.deepEqual((await c.call('list')).files, ['in.ipynb']);
    assert.deepEqual((await c.call('open', { path: 'in.ipynb' })).notebook, nb);
  });

  it('notebook_tab_closed_kernel_culled a closed tab\'s kernel goes after a timeout', async () => {
    const s = await server({ cullMs: 50 });
    const c = await connected(s);
    const { kernelId } = await c.call('start', { preset: MODE });
    assert.equal(s.kernels.size, 1);
    c.ws.close();
    await s.logged(new RegExp(`^kernel ${kernelId} shut down$`));
    assert.equal(s.kernels.size, 0);
    assert.equal(s.manager.getKernel(kernelId), undefined);
  });
});
