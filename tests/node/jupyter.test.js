// jupyter.test.js: manager.serveJupyter() in a live Node host: a real jupyter_client
// (tests/jupyter/attach_client.py, a child process) attaches to a kernel this process serves
// while Node's own loop keeps turning (a setInterval tick counter), and the server's life as a
// Node host sees it. The same names as tests/c/test_jupyter_attach.c and tests/lua/jupyter_spec.lua.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { assert, kernelhost, manager, kernel, closeAll, opts, recorder } = require('./helpers');

const PYTHON = '/usr/bin/python3'; // Debian's, where jupyter_client is
const CLIENT = path.join(__dirname, '..', 'jupyter', 'attach_client.py');

function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kh-jupyter-'));
}

function gone(file) {
  return !fs.existsSync(file);
}

function throwsCode(fn, code) {
  assert.throws(fn, (err) => {
    assert.ok(!(err instanceof TypeError), `a TypeError, not ${code}: ${err.message}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

/** Runs attach_client.py on the connection file; resolves with its summary once it exited,
 * failing unless its every check held. */
function attach(file, ...flags) {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [CLIENT, file, ...flags], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s) => { out += s; });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      try {
        assert.equal(code, 0, `attach_client.py exited ${code} (${signal}): ${out}`);
        const summary = JSON.parse(out);
        assert.deepEqual(summary.failures, []);
        resolve(summary);
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** Resolves once the server emitted 'stopped'; counts how often it did. */
function stoppedCount(server) {
  const c = { n: 0 };
  c.done = new Promise((resolve) => server.on('stopped', () => { c.n++; resolve(); }));
  return c;
}

describe('jupyter', function () {
  afterEach(closeAll);

  it('jupyter_attach_live_host', async function () {
    const { m, id, k } = await kernel();
    const rec = recorder(m);
    const dir = tempDir();
    const file = path.join(dir, 'connection.json');
    const server = m.serveJupyter(id, { connectionFile: file });
    const stopped = stoppedCount(server);
    assert.ok(server instanceof kernelhost.JupyterServer);
    assert.equal(server.kernelId, id);
    assert.equal(server.connectionFile, file);
    // connectionInfo is the file's content, keys as Jupyter writes them.
    assert.deepEqual(server.connectionInfo, JSON.parse(fs.readFileSync(file, 'utf8')));
    assert.equal(server.connectionInfo.ip, '127.0.0.1');
    assert.equal(server.connectionInfo.transport, 'tcp');
    assert.equal(server.connectionInfo.signature_scheme, 'hmac-sha256');
    assert.ok(server.connectionInfo.key.length >= 32);
    assert.ok(server.connectionInfo.shell_port > 0);
    assert.equal(server.info().stopping, false);

    // Node's own loop keeps turning while the client attaches and its cells run.
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 1);
    let markerTicks = -1;
    let markerExec = null;
    m.onKernelEvent(id, 'stream', (d) => {
      if (markerExec === null && d.text.includes('wire-marker 42')) {
        markerTicks = ticks;
        markerExec = d.executionId;
      }
    });
    const ticksAtSpawn = ticks;
    let summary;
    try {
      summary = await attach(file);
    } finally {
      clearInterval(timer);
    }
    assert.equal(summary.execute.status, 'ok');
    assert.equal(summary.execute.stdout, 'wire-marker 42\n');
    assert.equal(summary.interrupt.ename, 'KeyboardInterrupt');
    assert.equal(summary.complete.status, 'ok');

    // This host saw the wire's cells among its own events of the kernel.
    assert.notEqual(markerExec, null);
    assert.ok(markerTicks > ticksAtSpawn, `ticks ${ticksAtSpawn} -> ${markerTicks}`);
    assert.ok(ticks > markerTicks);
    const err = rec.events.find((e) => e.kernelId === id && e.type === 'execute_error');
    assert.equal(err.data.ename, 'KeyboardInterrupt');
    assert.notEqual(err.data.executionId, markerExec);
    const info = server.info();
    assert.ok(info.messages > 0);
    assert.equal(info.dropped, 0);
    assert.equal(stopped.n, 0);

    // Stopping: 'stopped' once, the file gone, the kernel running on with the wire's namespace.
    await server.stop();
    assert.equal(stopped.n, 1);
    assert.equal(server.stopped, true);
    assert.ok(gone(file));
    assert.equal(server.info().stopping, true);
    const r = await k.execute('wire_value + 1');
    assert.equal(r.result.data['text/plain'], '43');
    fs.rmdirSync(dir);
  });

  it('jupyter_attach_shutdown', async function () {
    const { m, id, k } = await kernel();
    const dir = tempDir();
    const file = path.join(dir, 'connection.json');
    const server = m.serveJupyter(id, { connectionFile: file });
    const notes = [];
    server.on('shutdown', (d) => notes.push(['shutdown', d]));
    server.on('stopped', () => notes.push(['stopped']));
    const stopped = stoppedCount(server);
    const summary = await attach(file, '--shutdown');
    assert.equal(summary.shutdown.reply, 'shutdown_reply');
    await stopped.done;
    assert.deepEqual(notes, [['shutdown', { restart: false }], ['stopped']]);
    assert.ok(gone(file));
    assert.ok(m.getKernel(id) !== undefined);
    assert.equal((await k.execute('6 * 7')).result.data['text/plain'], '42');
    fs.rmdirSync(dir);
  });

  it('jupyter_serve_bad_options', async function () {
    const { m, id } = await kernel();
    const dir = tempDir();
    // What the core refuses: an Error with code KH_EOPTION that names the option.
    for (const [opts, mention] of [
      [{ bogus: 1 }, 'bogus'],
      [{ ip: 5 }, 'ip'],
      [{ connectionFile: true }, 'connectionFile'],
      [{ shutdown: 'later' }, 'shutdown'],
      [{ transport: 'udp' }, 'transport'],
      [{ connection: { shell_port: 'x' } }, 'shell_port'],
      [{ connection: { shell_port: 70000 } }, 'shell_port'],
      [{ connection: { shell_port: NaN } }, 'shell_port'],
    ]) {
      assert.throws(() => m.serveJupyter(id, opts), (err) => {
        assert.ok(!(err instanceof TypeError), `${JSON.stringify(opts)}: ${err.message}`);
        assert.equal(err.code, 'KH_EOPTION', `${JSON.stringify(opts)}: ${err.message}`);
        assert.ok(err.message.includes(mention), err.message);
        return true;
      });
    }
    // Misuse: TypeError.
    assert.throws(() => m.serveJupyter(id, 'opts'), TypeError);
    assert.throws(() => m.serveJupyter(id, [1]), TypeError);
    assert.throws(() => m.serveJupyter(7), TypeError);
    // Nothing was left serving: the kernel can be served now.
    const file = path.join(dir, 'c.json');
    const server = m.serveJupyter(id, { connectionFile: file });
    await server.stop();
    assert.ok(gone(file));
    fs.rmdirSync(dir);
  });

  it('jupyter_serve_twice', async function () {
    const { m, id } = await kernel();
    const dir = tempDir();
    const f1 = path.join(dir, 'one.json');
    const f2 = path.join(dir, 'two.json');
    const s1 = m.serveJupyter(id, { connectionFile: f1 });
    throwsCode(() => m.serveJupyter(id, { connectionFile: f2 }), 'KH_EEXIST');
    assert.ok(gone(f2));
    assert.equal(s1.info().stopping, false);
    await s1.stop();
    const s2 = m.serveJupyter(id, { connectionFile: f2 });
    assert.notEqual(s2, s1);
    await s2.stop();
    assert.ok(gone(f1) && gone(f2));
    fs.rmdirSync(dir);
  });

  it('jupyter_stop_twice', async function () {
    const { m, id } = await kernel();
    const dir = tempDir();
    const file = path.join(dir, 'c.json');
    const server = m.serveJupyter(id, { connectionFile: file });
    const stopped = stoppedCount(server);
    const p1 = server.stop();
    const p2 = server.stop();
    assert.equal(p1, p2);
    assert.equal(stopped.n, 0); // from the loop, never inside stop()
    await p1;
    assert.equal(server.stop(), p1);
    await server.stop();
    await m.close();
    assert.equal(stopped.n, 1);
    assert.ok(gone(file));
    fs.rmdirSync(dir);
  });

  it('jupyter_serve_unknown_kernel', async function () {
    const m = manager();
    throwsCode(() => m.serveJupyter('no-such-kernel'), 'KH_ENOTFOUND');
    const id = await m.createKernel(opts());
    await m.destroyKernel(id);
    throwsCode(() => m.serveJupyter(id), 'KH_ENOTFOUND');
    await m.close();
    throwsCode(() => m.serveJupyter(id), 'KH_ECLOSED');
  });

  it('jupyter_connection_file_mode', async function () {
    const { m, id } = await kernel();
    const dir = tempDir();
    const file = path.join(dir, 'c.json');
    let server = m.serveJupyter(id, { connectionFile: file });
    assert.equal(fs.statSync(file).mode & 0o7777, 0o600);
    await server.stop();
    assert.ok(gone(file));
    // The default place: Jupyter's runtime directory, where `jupyter console --existing`
    // finds the file by its name.
    const old = process.env.JUPYTER_RUNTIME_DIR;
    process.env.JUPYTER_RUNTIME_DIR = dir;
    try {
      server = m.serveJupyter(id);
    } finally {
      if (old === undefined) delete process.env.JUPYTER_RUNTIME_DIR;
      else process.env.JUPYTER_RUNTIME_DIR = old;
    }
    const def = path.join(dir, `kernel-kh-${id}.json`);
    assert.equal(server.connectionFile, def);
    assert.equal(fs.statSync(def).mode & 0o7777, 0o600);
    await server.stop();
    assert.ok(gone(def));
    fs.rmdirSync(dir);
  });

  it('jupyter_serve_stops_on_destroy', async function () {
    const { m, id } = await kernel();
    const dir = tempDir();
    const file = path.join(dir, 'c.json');
    const server = m.serveJupyter(id, { connectionFile: file });
    const stopped = stoppedCount(server);
    await m.destroyKernel(id);
    await stopped.done;
    await server.stop(); // stopped already: resolves
    assert.equal(stopped.n, 1);
    assert.ok(gone(file));
    fs.rmdirSync(dir);
  });

  it('jupyter_serve_stops_on_manager_close', async function () {
    const { m, id } = await kernel();
    const dir = tempDir();
    const file = path.join(dir, 'c.json');
    const server = m.serveJupyter(id, { connectionFile: file });
    const stopped = stoppedCount(server);
    await m.close();
    assert.equal(stopped.n, 1); // before close() resolved
    assert.ok(gone(file));
    assert.equal(server.info().stopping, true);
    await server.stop();
    fs.rmdirSync(dir);
  });
  // Like a listening net.Server, a served kernel keeps the process alive (a child that holds
  // no reference to anything and ran the garbage collector still serves); once the server
  // stopped, the process exits on its own though the kernel still exists.
  it('node_jupyter_keeps_process_alive', async function () {
    const dir = tempDir();
    const file = path.join(dir, 'connection.json');
    const child = spawn(process.execPath,
      ['--expose-gc', path.join(__dirname, 'fixtures', 'jupyter-alive.js'), file],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const exited = new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal })); // its output all read
    });
    await new Promise((resolve) => child.stdout.on('data', (b) => {
      out += b;
      if (out.includes('serving\n')) resolve();
    }));
    const summary = await attach(file, '--shutdown');
    assert.equal(summary.shutdown.reply, 'shutdown_reply');
    assert.deepEqual(await exited, { code: 0, signal: null });
    assert.equal(out, 'serving\nshutdown restart=false\nstopped\n');
    assert.ok(gone(file));
    fs.rmdirSync(dir);
  });
});
