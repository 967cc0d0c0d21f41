// node.test.js: behaviour specific to Node: the loop never waits for Python, the process exits
// when idle, worker_threads, and executeStream as an async iterator.
'use strict';

const path = require('node:path');
const { spawn } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { assert, MODE, kernel, closeAll, busy, quiet } = require('./helpers');

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
});
