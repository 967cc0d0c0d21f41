// remote.test.js: mode "remote" kernels on a Jupyter Server (tests/remote/gateway.py, one per
// suite, behind a proxy the test can cut, a server it can kill and start again). Run as its own
// ctest entry, node/remote (tests/node/.mocharc.json leaves it out of node/mocha and
// node/mocha_worker: it does not depend on KH_TEST_MODE). Names match tests/c/test_remote.c and
// tests/lua/remote_spec.lua.
'use strict';

const path = require('node:path');
const readline = require('node:readline');
const { execFile, spawn } = require('node:child_process');
const {
  assert, kernelhost, manager, closeAll, rejects, recorder, outputsOf, streamText, quiet,
} = require('./helpers');

const { KernelMode } = kernelhost;
const GATEWAY_PY = path.join(__dirname, '..', 'remote', 'gateway.py');

/**
 * The fixture process: its first line {url, server_url, token, pid}, then one JSON answer line
 * per command line. Closing its stdin stops the server and removes its files.
 */
class Gateway {
  /** kernelhostJupyter: also serve kernelspec "kernelhost", that kernelhost-jupyter's own. */
  constructor(kernelhostJupyter) {
    const args = kernelhostJupyter ? [GATEWAY_PY, '--kernelhost-jupyter', kernelhostJupyter]
      : [GATEWAY_PY];
    this.proc = spawn('/usr/bin/python3', args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.lines = [];
    this.waiters = [];
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => {
      this.ended = `gateway.py exited (${signal || code})`;
      for (const w of this.waiters.splice(0)) w.reject(new Error(this.ended));
      resolve();
    }));
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const w = this.waiters.shift();
      if (w !== undefined) w.resolve(line);
      else this.lines.push(line);
    });
  }

  _line() {
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    if (this.ended) return Promise.reject(new Error(this.ended));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async ready() {
    const info = JSON.parse(await this._line());
    assert.ok(info.url && info.token, `gateway.py said ${JSON.stringify(info)}`);
    Object.assign(this, info);
    return this;
  }

  /** Sends one command; resolves with its answer, which must be ok. */
  async send(cmd) {
    this.proc.stdin.write(`${cmd}\n`);
    const answer = JSON.parse(await this._line());
    assert.equal(answer.ok, true, `gateway.py ${cmd}: ${answer.error}`);
    return answer;
  }

  /** The body of the last POST /api/kernels that went through the proxy. */
  async lastPost() {
    const { posts } = await this.send('posts');
    assert.ok(posts.length > 0, 'no POST /api/kernels went through the proxy');
    return posts[posts.length - 1];
  }

  /** The server's kernel ids, asked of the server directly. */
  async kernelIds() {
    return (await this.send('kernels')).kernels.map((k) => k.id);
  }

  async stop() {
    this.proc.stdin.end();
    await this.exited;
  }
}

describe('remote', function () {
  let gw;

  before(async function () {
    // The manager option `gateway` takes the keys it is not given from these: they must not
    // leak into the managers made here (remote_no_gateway makes one without a gateway).
    for (const v of ['URL', 'TOKEN', 'KERNEL_NAME', 'HEADERS']) {
      delete process.env[`KERNELHOST_GATEWAY_${v}`];
    }
    // ctest gives KH_JUPYTER_EXE (remote_options_passed_to_kernelhost serves its kernelspec).
    gw = await new Gateway(process.env.KH_JUPYTER_EXE).ready();
  });

  after(async function () {
    if (gw) await gw.stop();
  });

  // Closing the managers destroys their kernels, which shuts the remote ones down.
  afterEach(closeAll);

  /** A manager on the fixture's gateway (closed after the test), with `extra` gateway keys. */
  function gatewayManager(extra = {}) {
    return manager({
      gateway: { url: gw.url, token: gw.token, reconnectTimeout: 3000, pollInterval: 500, ...extra },
    });
  }

  /** A manager on the fixture's gateway and one remote kernel on it. */
  async function remoteKernel(extra = {}) {
    const m = gatewayManager();
    const rec = recorder(m);
    const id = await m.createKernel({ mode: KernelMode.REMOTE, ...extra });
    return { m, rec, id, k: m.getKernel(id) };
  }

  /** The remote (server's) kernel id of local kernel `id`. */
  function remoteId(m, id) {
    const info = m.getKernelInfo(id);
    assert.ok(info && info.remote && typeof info.remote.id === 'string',
      `no remote.id in ${JSON.stringify(info)}`);
    return info.remote.id;
  }

  /** Sends `cmd` to the fixture on kernel id's first stream event: `sent.answer` is then the
   * Promise of its answer (null until then). */
  function sendOnFirstStream(m, id, cmd) {
    const sent = { answer: null };
    const onStream = () => {
      m.offKernelEvent(id, 'stream', onStream);
      sent.answer = quiet(gw.send(cmd));
    };
    m.onKernelEvent(id, 'stream', onStream);
    return sent;
  }

  /** The types of a request's events, each run of stream events counted once (ipykernel may
   * send a print's text and its newline apart). */
  function eventTypes(r) {
    const out = [];
    for (const o of r.outputs) {
      if (o.type === 'stream' && out[out.length - 1] === 'stream') continue;
      out.push(o.type === 'status' ? `status:${o.data.execution_state}` : o.type);
    }
    return out;
  }

  // First, while this process has closed no manager of remote kernels: the scenario runs in a
  // child Node, so that a host it breaks fails this test rather than the suite's teardown.
  it('node_child_process_untouched', async function () {
    const script = `
      const { spawnSync } = require('node:child_process');
      const { KernelManager } = require(${JSON.stringify(path.join(__dirname, '..', '..'))});
      (async () => {
        const m = new KernelManager({ gateway: ${JSON.stringify({ url: gw.url, token: gw.token })} });
        const id = await m.createKernel({ mode: 'remote' });
        await m.getKernel(id).execute('1');
        await m.close();
        const r = spawnSync('/bin/true');
        process.stdout.write('true: ' + r.status + ' ' + r.signal + ' ' + r.error);
      })();`;
    const { code, signal, stdout, stderr } = await new Promise((resolve) => {
      execFile(process.execPath, ['-e', script], (err, out, errOut) => resolve({
        code: err ? err.code : 0, signal: err ? err.signal : null, stdout: out, stderr: errOut,
      }));
    });
    assert.equal(stdout, 'true: 0 null undefined', `child: ${code} ${signal} ${stderr}`);
    assert.equal(code, 0, `the host ended with ${code} ${signal}: ${stderr}`);
  });

  it('remote_execute_events_in_order', async function () {
    const { k } = await remoteKernel();
    const r = await k.execute('print("hi"); from IPython.display import display, HTML; ' +
      'display(HTML("<b>x</b>")); 40+2');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.executionCount, 1);
    assert.equal(r.result.data['text/plain'], '42');
    assert.deepEqual(eventTypes(r),
      ['status:busy', 'stream', 'display_data', 'execute_result', 'status:idle']);
    assert.equal(streamText(r, true), 'stdout:hi\n');
    const [shown] = outputsOf(r, 'display_data');
    assert.equal(shown.data['text/html'], '<b>x</b>');
    assert.equal(outputsOf(r, 'execute_result')[0].data['text/plain'], '42');

    const e = await k.execute('raise ValueError("bad")');
    assert.equal(e.status, 'error');
    assert.equal(e.error.ename, 'ValueError');
    assert.equal(e.error.evalue, 'bad');
    const [err] = outputsOf(e, 'execute_error');
    assert.ok(err, `no execute_error in ${JSON.stringify(eventTypes(e))}`);
    assert.equal(err.ename, 'ValueError');
    assert.deepEqual(eventTypes(e), ['status:busy', 'execute_error', 'status:idle']);
  });

  it('remote_input_reply', async function () {
    const { m, id, k } = await remoteKernel();
    const asked = [];
    m.onKernelEvent(id, 'input_request', (data) => {
      asked.push({ prompt: data.prompt, password: data.password });
      k.inputReply('kh');
    });
    const r = await k.execute('input("name? ")', { allowStdin: true });
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.deepEqual(asked, [{ prompt: 'name? ', password: false }]);
    assert.equal(r.result.data['text/plain'], "'kh'");
  });

  it('remote_interrupt', async function () {
    const { m, id, k } = await remoteKernel();
    const started = new Promise((resolve) => m.onKernelEvent(id, 'stream', resolve));
    // The marker says the cell itself runs (not ipykernel's code around it) when the SIGINT
    // the server sends arrives.
    const p = quiet(k.execute('print("<started>", flush=True)\nimport time; time.sleep(30)'));
    await started;
    await k.interrupt();
    const r = await p;
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
  });

  it('remote_restart', async function () {
    const { k } = await remoteKernel();
    assert.equal((await k.execute('x = 1')).status, 'ok');
    await k.restart();
    const r = await k.execute('x');
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'NameError');
    assert.equal(r.executionCount, 1);
  });

  it('remote_destroy_shuts_down', async function () {
    const { m, id } = await remoteKernel();
    const rid = remoteId(m, id);
    assert.ok((await gw.kernelIds()).includes(rid), `the server does not run ${rid}`);
    await m.destroyKernel(id);
    assert.equal(m.getKernel(id), undefined);
    assert.ok(!(await gw.kernelIds()).includes(rid), `the server still runs ${rid}`);
  });

  it('remote_list_kernels_and_specs', async function () {
    const { m, id } = await remoteKernel();
    const rid = remoteId(m, id);
    const remote = await m.listRemoteKernels();
    assert.ok(Array.isArray(remote));
    assert.ok(remote.some((r) => r.id === rid), `${rid} not in ${JSON.stringify(remote)}`);
    const specs = await m.listKernelspecs();
    assert.ok(specs.kernelspecs.python3, `no python3 in ${JSON.stringify(specs)}`);
    assert.equal(specs.kernelspecs.python3.name, 'python3');
    const local = m.listKernels().find((k) => k.id === id);
    assert.ok(local, `${id} not in listKernels()`);
    assert.equal(local.mode, KernelMode.REMOTE);
    assert.equal(m.getKernel(id).mode, KernelMode.REMOTE);
  });

  it('remote_connect_by_id', async function () {
    const { m, id, k } = await remoteKernel();
    assert.equal((await k.execute('x = 5')).status, 'ok');
    const rid = remoteId(m, id);
    const bId = await m.connectKernel(rid);
    assert.notEqual(bId, id);
    const b = m.getKernel(bId);
    assert.equal(b.mode, KernelMode.REMOTE);
    assert.equal(remoteId(m, bId), rid);
    const r = await b.execute('x');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '5');
    await m.destroyKernel(bId);
    assert.ok((await gw.kernelIds()).includes(rid), 'destroying the connected kernel shut A down');
    const again = await k.execute('x');
    assert.equal(again.status, 'ok', JSON.stringify(again.error));
    assert.equal(again.result.data['text/plain'], '5');
  });

  it('remote_bad_token', async function () {
    const m = gatewayManager({ token: `${gw.token}-wrong` });
    await rejects(m.createKernel({ mode: KernelMode.REMOTE }), 'KH_EAUTH');
    assert.deepEqual(m.listKernels(), []);
  });

  it('remote_unreachable', async function () {
    const token = 'kh-secret-token-never-shown';
    const m = manager({ gateway: { url: 'http://127.0.0.1:1', token, reconnectTimeout: 3000 } });
    const err = await m.createKernel({ mode: KernelMode.REMOTE }).then(
      () => assert.fail('createKernel succeeded'), (e) => e);
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'KH_EREMOTE', err.message);
    assert.ok(err.message.includes('127.0.0.1:1'), err.message);
    assert.ok(!err.message.includes(token), err.message);
    assert.deepEqual(m.listKernels(), []);
  });

  it('remote_websocket_cut_mid_cell', async function () {
    const { m, rec, id, k } = await remoteKernel();
    const cut = sendOnFirstStream(m, id, 'cut');
    const r = await k.execute('import time\nfor i in range(5):\n    print(i, flush=True); ' +
      'time.sleep(0.3)');
    assert.ok(cut.answer !== null, 'no stream event came');
    assert.ok((await cut.answer).cut > 0, 'the proxy had no connection to cut');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(streamText(r), '0\n1\n2\n3\n4\n');
    // Listeners saw each output once too.
    const seen = rec.events.filter((e) => e.type === 'stream' && e.kernelId === id)
      .map((e) => e.data.text).join('');
    assert.equal(seen, '0\n1\n2\n3\n4\n');
  });

  it('remote_server_killed_mid_cell', async function () {
    const { m, rec, id, k } = await remoteKernel();
    const killed = sendOnFirstStream(m, id, 'kill');
    try {
      await rejects(k.execute('print("<started>", flush=True)\nimport time; time.sleep(30)'),
        'KH_EKERNELDEAD');
      assert.ok(killed.answer !== null, 'no stream event came');
      await killed.answer;
      const dead = await rec.waitFor((e) => e.kernelId === id && e.type === 'status' &&
        e.data.execution_state === 'dead');
      assert.ok(dead.data.reason, `dead without a reason: ${JSON.stringify(dead.data)}`);
    } finally {
      // The next tests need the server, whatever happened here.
      if (killed.answer !== null) {
        await killed.answer;
        await gw.send('start');
      }
    }
    const id2 = await m.createKernel({ mode: KernelMode.REMOTE });
    const r = await m.getKernel(id2).execute('1+1');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '2');
  });

  it('remote_options_refused', async function () {
    const m = gatewayManager();
    for (const [name, value] of [['permissions', { read: ['/tmp'] }],
      ['filesystem', { enabled: true, root: '/tmp' }], ['limits', { memoryBytes: 1 << 28 }]]) {
      const err = await m.createKernel({ mode: KernelMode.REMOTE, [name]: value }).then(
        () => assert.fail(`createKernel with ${name} succeeded`), (e) => e);
      assert.equal(err.code, 'KH_ENOTSUP', `${name}: ${err.message}`);
      assert.ok(err.message.includes(`'${name}`), `${name}: ${err.message}`);
      // The kernelspec decides, and Debian's ipykernel one takes no such options.
      assert.ok(err.message.includes('kernelspec "python3"'), `${name}: ${err.message}`);
    }
    assert.deepEqual(m.listKernels(), []);
    assert.deepEqual(await gw.kernelIds(), []);
    // What no remote kernel can honour is refused at once, whatever the kernelspec.
    for (const [name, value] of [['autoRestart', true], ['thread', 'host'],
      ['figureFormats', ['svg']]]) {
      const err = await m.createKernel({ mode: KernelMode.REMOTE, [name]: value }).then(
        () => assert.fail(`createKernel with ${name} succeeded`), (e) => e);
      assert.equal(err.code, 'KH_ENOTSUP', `${name}: ${err.message}`);
      assert.ok(err.message.includes(name), `${name}: ${err.message}`);
    }
    // Host functions: a remote kernel has no way back into this process.
    const k = m.getKernel(await m.createKernel({ mode: KernelMode.REMOTE }));
    assert.throws(() => k.expose('f', () => 1), (err) => {
      assert.equal(err.code, 'KH_ENOTSUP', err.message);
      assert.match(err.message, /remote/);
      return true;
    });
  });

  it('remote_options_passed_to_kernelhost', async function () {
    assert.ok(process.env.KH_JUPYTER_EXE,
      'KH_JUPYTER_EXE must name the kernelhost-jupyter whose kernelspec the server serves');
    const m = gatewayManager();
    const id = await m.createKernel({ mode: KernelMode.REMOTE, kernelName: 'kernelhost',
      permissions: { read: ['/tmp'] }, limits: { memoryBytes: 2000000000 } });
    // Said in the kernel's info: what went to the kernelspec, in which variable.
    const { remote } = m.getKernelInfo(id);
    assert.deepEqual(remote.passedOptions, ['permissions', 'limits']);
    assert.equal(remote.passedIn, 'KERNEL_KERNELHOST_OPTIONS');
    // And in the create request.
    const post = await gw.lastPost();
    const opts = JSON.parse(post.env.KERNEL_KERNELHOST_OPTIONS);
    assert.deepEqual(opts.permissions.read, ['/tmp']);
    assert.equal(opts.limits.memory_bytes, 2000000000);
    // The remote kernel is a kernelhost kernel.
    const r = await m.getKernel(id).execute('import kernelhost; 6 * 7');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '42');
  });

  it('remote_no_gateway', async function () {
    for (const v of ['URL', 'TOKEN', 'KERNEL_NAME', 'HEADERS']) {
      assert.equal(process.env[`KERNELHOST_GATEWAY_${v}`], undefined);
    }
    const m = manager();
    const err = await m.createKernel({ mode: KernelMode.REMOTE }).then(
      () => assert.fail('createKernel succeeded'), (e) => e);
    assert.equal(err.code, 'KH_ENOTSUP', err.message);
    assert.match(err.message, /gateway/);
    await rejects(m.listRemoteKernels(), 'KH_ENOTSUP');
    await rejects(m.listKernelspecs(), 'KH_ENOTSUP');
  });

  it('remote_complete', async function () {
    const { k } = await remoteKernel();
    const c = await k.complete('import o', 8);
    assert.ok(c.matches.includes('os'), JSON.stringify(c.matches));
    assert.equal((await k.isComplete('for i in x:')).status, 'incomplete');
    const i = await k.inspect('len', 3);
    assert.equal(i.found, true);
  });

  it('remote_env_passed_in_create', async function () {
    await remoteKernel({ kernelName: 'python3', env: { KERNEL_USERNAME: 'alice' } });
    const post = await gw.lastPost();
    assert.equal(post.name, 'python3');
    assert.equal(post.env.KERNEL_USERNAME, 'alice');
  });

  it('remote_kernel_culled', async function () {
    const { m, rec, id, k } = await remoteKernel();
    await gw.send(`delete ${remoteId(m, id)}`);
    const dead = await rec.waitFor((e) => e.kernelId === id && e.type === 'status' &&
      e.data.execution_state === 'dead');
    assert.match(dead.data.reason.message, /gone/);
    await rejects(k.execute('1'), 'KH_EKERNELDEAD');
  });

  it('remote_comm_buffers', async function () {
    const { k } = await remoteKernel();
    const r = await k.execute('def _echo(comm, msg):\n' +
      '    @comm.on_msg\n' +
      '    def _r(m):\n' +
      "        comm.send({'got': m['content']['data']}, buffers=[bytes(x)[::-1] for x in m['buffers']])\n" +
      "get_ipython().kernel.comm_manager.register_target('echo', _echo)");
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    const comm = k.openComm('echo', {});
    const got = new Promise((resolve) => comm.once('msg', resolve));
    comm.send({ x: 1 }, { buffers: [Buffer.from('abc')] });
    const msg = await got;
    assert.deepEqual(msg.data.got, { x: 1 });
    assert.ok(Buffer.isBuffer(msg.buffers[0]), `buffers: ${JSON.stringify(msg.buffers)}`);
    assert.equal(msg.buffers[0].toString(), 'cba');
  });

  it('remote_kernel_crash_restarted', async function () {
    const { rec, id, k } = await remoteKernel();
    assert.equal((await k.execute('x = 1')).status, 'ok');
    // The kernel's process dies; the server's restarter starts a new one and says so.
    await rejects(k.execute('import os; os._exit(1)'), 'KH_EKERNELDEAD');
    const r = await k.execute("'x' in globals()"); // waits for the fresh kernel
    const states = rec.events.filter((e) => e.kernelId === id && e.type === 'status')
      .map((e) => e.data.execution_state);
    assert.ok(states.includes('restarting'), `no restarting status in ${states.join(' ')}`);
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], 'False');
    assert.equal(r.executionCount, 1);
  });

  it('remote_execute_options', async function () {
    const { k } = await remoteKernel();
    // silent: no execute_result, the counter stays.
    const s = await k.execute('y = 41\ny + 1', { silent: true });
    assert.equal(s.status, 'ok', JSON.stringify(s.error));
    assert.equal(s.result, undefined);
    assert.deepEqual(outputsOf(s, 'execute_result'), []);
    const y = await k.execute('y');
    assert.equal(y.executionCount, 1);
    assert.equal(y.result.data['text/plain'], '41');
    // allowStdin false: input() raises, no input_request.
    const i = await k.execute("input('?')", { allowStdin: false });
    assert.equal(i.status, 'error');
    assert.equal(i.error.ename, 'StdinNotImplementedError');
    assert.deepEqual(outputsOf(i, 'input_request'), []);
    // timeout: the core interrupts the remote cell.
    const t = await k.execute('import time; time.sleep(30)', { timeout: 1000 });
    assert.equal(t.status, 'error');
    assert.equal(t.error.ename, 'KeyboardInterrupt');
  });
});
