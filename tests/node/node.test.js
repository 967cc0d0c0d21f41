// node.test.js: behaviour specific to Node: the loop never waits for Python, the process exits
// when idle, worker_threads, executeStream as an async iterator, and camelCase API shapes over
// the core's snake_case JSON.
'use strict';

const path = require('node:path');
const { spawn } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { assert, MODE, kernel, closeAll, busy, quiet } = require('./helpers');

/** Paths of the object keys in `v` that are not camelCase, except below `env` (user names). */
function nonCamelKeys(v, at = '') {
  if (v === null || typeof v !== 'object') return [];
  return Object.entries(v).flatMap(([key, x]) => [
    ...(/_/.test(key) ? [`${at}${key}`] : []),
    ...(key === 'env' ? [] : nonCamelKeys(x, `${at}${key}.`)),
  ]);
}

function runChild(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { err += b; });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, out, err }));
  });
}

describe('node', function () {
  afterEach(closeAll);

  it('node_loop_not_blocked', async function () {
    const { m, id, k } = await kernel();
    const started = busy(m, id);
    const cell = quiet(k.execute('while True: pass'));
    await started;
    // The cell cannot end without the interrupt, so every tick below ran while Python spun.
    const ticks = await new Promise((resolve) => {
      let n = 0;
      const t = setInterval(() => {
        if (++n === 5) {
          clearInterval(t);
          resolve(n);
        }
      }, 1);
    });
    assert.equal(ticks, 5);
    await k.interrupt();
    const r = await cell;
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
  });

  it('node_process_exits_when_idle', async function () {
    const script = path.join(__dirname, 'fixtures', 'exit-when-idle.js');
    for (const variant of ['idle', 'close', 'ref-unref', 'busy']) {
      const r = await runChild([script, variant]);
      assert.equal(r.code, 0, `${variant}: exit ${r.code} ${r.signal}\n${r.err}`);
      assert.match(r.out, /result 42/, variant);
      if (variant === 'busy') assert.match(r.out, /late 499999500000/);
    }
  });

  it('node_worker_threads_terminate', async function () {
    const file = path.join(__dirname, 'fixtures', 'worker-thread.js');
    // A worker thread that uses kernelhost and closes its manager.
    const w1 = new Worker(file, { workerData: { mode: MODE, spin: false } });
    const msgs = [];
    w1.on('message', (msg) => msgs.push(msg));
    const code1 = await new Promise((resolve, reject) => {
      w1.on('error', reject);
      w1.on('exit', resolve);
    });
    assert.equal(code1, 0);
    assert.deepEqual(msgs, [{ type: 'result', value: '42' }, { type: 'closed' }]);
    // Terminated while a cell spins: the process survives and stays usable.
    for (let i = 0; i < 2; i++) {
      const w2 = new Worker(file, { workerData: { mode: MODE, spin: true } });
      const exited = new Promise((resolve, reject) => {
        w2.on('error', reject);
        w2.on('exit', resolve);
      });
      await new Promise((resolve) => w2.on('message', (msg) => {
        if (msg.type === 'busy') resolve();
      }));
      await w2.terminate();
      assert.equal(await exited, 1);
    }
    const { k } = await kernel();
    assert.equal((await k.execute('1 + 1')).result.data['text/plain'], '2');
  });

  it('node_execute_stream_iterator', async function () {
    const { m, id, k } = await kernel();
    const items = [];
    for await (const item of k.executeStream("print('a')\ndisplay('b')\n'c'")) items.push(item);
    const result = items.pop();
    assert.equal(result.status, 'ok');
    assert.equal(result.result.data['text/plain'], "'c'");
    assert.deepEqual(items.map((e) => e.type),
      ['status', 'stream', 'display_data', 'execute_result', 'status']);
    assert.deepEqual(items.map((e) => e.type), result.outputs.map((o) => o.type));
    assert.ok(items.every((e) => e.data.kernelId === id));
    // Leaving early does not disturb the kernel; API failures end the iteration with a throw.
    for await (const item of k.executeStream('for i in range(3): print(i)')) {
      assert.equal(item.type, 'status');
      break;
    }
    assert.equal((await k.execute('7')).result.data['text/plain'], '7');
    assert.throws(() => k.executeStream(1), TypeError);
    await m.destroyKernel(id);
    await assert.rejects(async () => {
      for await (const item of k.executeStream('1')) assert.fail(`got ${item.type}`);
    }, (e) => ['KH_ENOTFOUND', 'KH_ECLOSED'].includes(e.code));
  });

  it('node_api_keys_camel_case', async function () {
    // Worker-only options where the mode allows them: the sandbox info and `env` come with them.
    const worker = MODE === 'worker';
    const env = { my_var: 'x', OTHER_VAR: 'y' };
    const { m, id, k } = await kernel({
      namespace: 'keys', maxExecutionTime: 60000, inactivityTimeout: 600000,
      ...(worker ? { env, limits: { maxOutputBytes: 100000 }, sandbox: 'best-effort' } : {}),
    });
    const r = await k.execute('1');
    assert.deepEqual(Object.keys(r).sort(), ['executionCount', 'outputs', 'result', 'status']);
    assert.equal(r.executionCount, 1);
    // Event payloads keep Jupyter's keys, in `outputs` as in listeners.
    assert.equal(r.outputs.find((o) => o.type === 'execute_result').data.execution_count, 1);
    assert.equal(r.outputs[0].data.execution_state, 'busy');
    const listed = m.listKernels('keys');
    assert.equal(listed[0].executionCount, 1);
    assert.deepEqual(nonCamelKeys(listed), []);
    const info = m.getKernelInfo(id);
    assert.equal(info.executionCount, 1);
    assert.equal(info.options.maxExecutionTime, 60000);
    assert.equal(info.options.inactivityTimeout, 600000);
    assert.deepEqual(nonCamelKeys(info), []);
    if (worker) {
      assert.deepEqual(info.options.env, env);
      assert.equal(info.options.limits.maxOutputBytes, 100000);
      assert.ok(Array.isArray(info.sandbox.runtimeRead));
      assert.equal(typeof info.sandbox.layers.noNewPrivs, 'boolean');
    }
  });
});
