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

/** Asserts fn throws an Error (no TypeError) with this code; returns it. */
function throwsCode(fn, code) {
  let thrown;
  assert.throws(fn, (err) => {
    assert.ok(!(err instanceof TypeError), `a TypeError, not ${code}: ${err.message}`);
    assert.equal(err.code, code, err.message);
    thrown = err;
    return true;
  });
  return thrown;
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

/**
 * Serves kernel `id` on connection.json in a fresh directory (`key` spells the option: the core
 * takes connectionFile and connection_file alike). `stopped` counts its 'stopped' events;
 * done() checks the server removed its file before it removes the directory.
 */
function serve(m, id, key = 'connectionFile') {
  const dir = tempDir();
  const file = path.join(dir, 'connection.json');
  const server = m.serveJupyter(id, { [key]: file });
  return {
    dir, file, server, stopped: stoppedCount(server),
    done() {
      assert.ok(gone(file));
      fs.rmdirSync(dir);
    },
  };
}

describe('jupyter', function () {
  afterEach(closeAll);

  it('jupyter_attach_live_host', async function () {
    const { m, id, k } = await kernel();
    const rec = recorder(m);
    const sv = serve(m, id);
    const { server } = sv;
    assert.ok(server instanceof kernelhost.JupyterServer);
    assert.equal(server.kernelId, id);
    assert.equal(server.connectionFile, sv.file);
    // connectionInfo is the file's content, keys as Jupyter writes them.
    assert.deepEqual(server.connectionInfo, JSON.parse(fs.readFileSync(sv.file, 'utf8')));
    assert.equal(server.connectionInfo.ip, '127.0.0.1');
    assert.equal(server.connectionInfo.transport, 'tcp');
    assert.equal(server.connectionInfo.signature_scheme, 'hmac-sha256');
    assert.ok(server.connectionInfo.key.length >= 32);
    assert.ok(server.connectionInfo.shell_port > 0);
    assert.equal(server.info().stopping, false);

    // Node's own loop keeps turning while the client attaches and its cells run, and this host
    // sees the wire's cells among its own events of the kernel.
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
      summary = await attach(sv.file);
    } finally {
      clearInterval(timer);
    }
    assert.equal(summary.execute.status, 'ok');
    assert.equal(summary.execute.stdout, 'wire-marker 42\n');
    assert.equal(summary.interrupt.ename, 'KeyboardInterrupt');
    assert.equal(summary.complete.status, 'ok');

    assert.notEqual(markerExec, null);
    assert.ok(markerTicks > ticksAtSpawn, `ticks ${ticksAtSpawn} -> ${markerTicks}`);
    assert.ok(ticks > markerTicks);
    const err = rec.events.find((e) => e.kernelId === id && e.type === 'execute_error');
    assert.equal(err.data.ename, 'KeyboardInterrupt');
    assert.notEqual(err.data.executionId, markerExec);
    const info = server.info();
    assert.ok(info.messages > 0);
    assert.equal(info.dropped, 0);
    assert.equal(sv.stopped.n, 0);

    // Stopping: 'stopped' once, the file gone, the kernel running on with the wire's namespace.
    await server.stop();
    assert.equal(sv.stopped.n, 1);
    assert.equal(server.stopped, true);
    assert.equal(server.info().stopping, true);
    const r = await k.execute('wire_value + 1');
    assert.equal(r.result.data['text/plain'], '43');
    sv.done();
  });

  it('jupyter_attach_shutdown', async function () {
    const { m, id, k } = await kernel();
    const sv = serve(m, id, 'connection_file');
    const notes = [];
    sv.server.on('shutdown', (d) => notes.push(['shutdown', d]));
    sv.server.on('stopped', () => notes.push(['stopped']));
    const summary = await attach(sv.file, '--shutdown');
    assert.equal(summary.shutdown.reply, 'shutdown_reply');
    await sv.stopped.done;
    assert.deepEqual(notes, [['shutdown', { restart: false }], ['stopped']]);
    assert.ok(m.getKernel(id) !== undefined);
    assert.equal((await k.execute('6 * 7')).result.data['text/plain'], '42');
    sv.done();
  });

  it('jupyter_serve_bad_options', async function () {
    const { m, id } = await kernel();
    // What the core refuses: an Error with code KH_EOPTION that names the option.
    for (const [options, mention] of [
      [{ bogus: 1 }, 'bogus'],
      [{ ip: 5 }, 'ip'],
      [{ connectionFile: true }, 'connectionFile'],
      [{ shutdown: 'later' }, 'shutdown'],
      [{ transport: 'udp' }, 'transport'],
      [{ connection: { shell_port: 'x' } }, 'shell_port'],
      [{ connection: { shell_port: 70000 } }, 'shell_port'],
      [{ connection: { shell_port: NaN } }, 'shell_port'],
    ]) {
      const err = throwsCode(() => m.serveJupyter(id, options), 'KH_EOPTION');
      assert.ok(err.message.includes(mention), err.message);
    }
    // Misuse: TypeError.
    assert.throws(() => m.serveJupyter(id, 'opts'), TypeError);
    assert.throws(() => m.serveJupyter(id, [1]), TypeError);
    assert.throws(() => m.serveJupyter(7), TypeError);
    // Nothing was left serving: the kernel can be served now.
    const sv = serve(m, id);
    await sv.server.stop();
    sv.done();
  });

  it('jupyter_serve_twice', async function () {
    const { m, id } = await kernel();
    const one = serve(m, id);
    const two = path.join(one.dir, 'two.json');
    const err = throwsCode(() => m.serveJupyter(id, { connectionFile: two }), 'KH_EEXIST');
    assert.ok(err.message.includes(id), err.message);
    assert.ok(gone(two));
    assert.equal(one.server.info().stopping, false);
    await one.server.stop();
    const again = serve(m, id);
    assert.notEqual(again.server, one.server);
    await again.server.stop();
    one.done();
    again.done();
  });

  it('jupyter_stop_twice', async function () {
    const { m, id } = await kernel();
    const sv = serve(m, id);
    const p1 = sv.server.stop();
    const p2 = sv.server.stop();
    assert.equal(p1, p2);
    assert.equal(sv.stopped.n, 0); // from the loop, never inside stop()
    await p1;
    assert.equal(sv.server.stop(), p1);
    await m.close();
    assert.equal(sv.stopped.n, 1);
    sv.done();
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
    const sv = serve(m, id);
    assert.equal(fs.statSync(sv.file).mode & 0o7777, 0o600);
    await sv.server.stop();
    // The default place: Jupyter's runtime directory, where `jupyter console --existing`
    // finds the file by its name.
    const old = process.env.JUPYTER_RUNTIME_DIR;
    process.env.JUPYTER_RUNTIME_DIR = sv.dir;
    let server;
    try {
      server = m.serveJupyter(id);
    } finally {
      if (old === undefined) delete process.env.JUPYTER_RUNTIME_DIR;
      else process.env.JUPYTER_RUNTIME_DIR = old;
    }
    const def = path.join(sv.dir, `kernel-kh-${id}.json`);
    assert.equal(server.connectionFile, def);
    assert.equal(fs.statSync(def).mode & 0o7777, 0o600);
    await server.stop();
    assert.ok(gone(def));
    sv.done();
  });

  it('jupyter_serve_stops_on_destroy', async function () {
    const { m, id } = await kernel();
    const sv = serve(m, id);
    await m.destroyKernel(id);
    await sv.stopped.done;
    await sv.server.stop(); // stopped already: resolves
    assert.equal(sv.stopped.n, 1);
    sv.done();
  });

  it('jupyter_serve_stops_on_manager_close', async function () {
    const { m, id } = await kernel();
    const sv = serve(m, id);
    await m.close();
    assert.equal(sv.stopped.n, 1); // before close() resolved
    assert.ok(gone(sv.file));
    assert.equal(sv.server.info().stopping, true);
    await sv.server.stop();
    sv.done();
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
