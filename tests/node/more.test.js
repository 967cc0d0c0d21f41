// more.test.js: core behaviours in the mode under test (KH_TEST_MODE): destroy and restart
// re-entered from promise continuations, swallowed interrupts, idle interrupts, inactivity,
// repeated cells, stream write() semantics and manager options.
'use strict';

const {
  assert, kernelhost, kernel, closeAll, rejects, quiet, nextEvent, streamText,
} = require('./helpers');

describe('more', function () {
  afterEach(closeAll);

  it('kernel_destroy_callback_sees_it_gone', async function () {
    const { m, id, k } = await kernel();
    // The continuation of the destroy runs right after the core's destroy callback: the kernel
    // is already unlinked then, so it is unknown (not merely closing).
    const codes = await m.destroyKernel(id).then(async () => {
      const seen = [];
      for (const p of [k.execute('1'), k.interrupt()]) {
        seen.push(await p.then(() => 'resolved', (e) => e.code));
      }
      return seen;
    });
    assert.deepEqual(codes, ['KH_ENOTFOUND', 'KH_ENOTFOUND']);
    assert.equal(m.getKernel(id), undefined);
    assert.deepEqual(m.listKernels(), []);
  });

  it('kernel_destroy_swallowed_interrupt', async function () {
    const { m, id, k } = await kernel({}, { interruptGraceMs: 100 });
    // The cell swallows the first KeyboardInterrupt; destroy keeps interrupting until it ends.
    const started = nextEvent(m, id, 'stream');
    const running = quiet(k.execute(
      "import time\nn = 0\nprint('started', flush=True)\nwhile n < 2:\n" +
      '    try:\n        time.sleep(100)\n    except KeyboardInterrupt:\n        n += 1\n'));
    assert.equal((await started).text, 'started\n');
    await m.destroyKernel(id);
    await rejects(running, 'KH_ECANCELED');
    assert.equal(m.getKernel(id), undefined);
    assert.deepEqual(m.listKernels(), []);
  });

  it('kernel_inactivity_timeout', async function () {
    const { m, id, k } = await kernel({ inactivityTimeout: 50 });
    // Nothing is in flight while the kernel idles: keep the process alive for the wait.
    m.ref();
    const dead = nextEvent(m, id, 'status', (d) => d.execution_state === 'dead');
    assert.equal((await k.execute('1')).status, 'ok');
    // An idle kernel is destroyed: it reports dead with the reason, then disappears.
    const d = await dead;
    assert.equal(d.reason.message, 'inactivityTimeout');
    // The kernel is unlisted once its destroy starts (C: kernel count 0); no event marks that,
    // so check once per loop turn (C's th_step). Requests are refused as KH_ECLOSED (closing)
    // until the destroy completes (C: pending count 0); then the id is unknown.
    while (m.listKernels().length > 0) await new Promise(setImmediate);
    let code;
    for (let i = 0; i < 100000; i++) {
      code = await k.execute('1').then(() => 'resolved', (e) => e.code);
      if (code !== 'KH_ECLOSED') break;
      await new Promise(setImmediate);
    }
    assert.equal(code, 'KH_ENOTFOUND');
    assert.deepEqual(m.listKernels(), []);
    assert.equal(m.getKernel(id), undefined);
  });

  it('kernel_interrupt_idle', async function () {
    const { m, id, k } = await kernel();
    const states = [];
    m.onKernelEvent(id, 'status', (s) => states.push(s.execution_state));
    // A no-op, as in Jupyter.
    assert.equal(await k.interrupt(), undefined);
    const r = await k.execute('1');
    assert.equal(r.status, 'ok');
    assert.equal(r.result.data['text/plain'], '1');
    assert.deepEqual(states, ['busy', 'idle']);
  });

  it('kernel_repeated_cell', async function () {
    const { k } = await kernel();
    // The same source again and again: each run is its own cell, with its own traceback name.
    for (let i = 1; i <= 3; i++) {
      const r = await k.execute("n = globals().get('n', 0) + 1\n1 / (n - n)");
      assert.equal(r.status, 'error');
      assert.equal(r.error.ename, 'ZeroDivisionError');
      assert.ok(r.error.traceback[1].includes(`<cell-${i}>`),
        `traceback[1] names <cell-${i}>: ${JSON.stringify(r.error.traceback)}`);
    }
    assert.equal((await k.execute('n')).result.data['text/plain'], '3');
  });

  it('kernel_restart_from_callback', async function () {
    const { k } = await kernel();
    assert.equal((await k.execute('y = 1')).status, 'ok');
    const order = [];
    // Re-enter from the continuation of a resolved execute: start a new cell, then restart
    // while it is queued or running. The restart waits for that cell, which is canceled.
    const { cell, restarted } = await k.execute('2').then((r) => {
      assert.equal(r.status, 'ok');
      const c = k.execute('while True: pass').then(
        (res) => { order.push(`cell:${res.status}`); },
        (err) => { order.push(`cell:${err.code}`); });
      const rs = k.restart().then(() => { order.push('restarted'); });
      return { cell: c, restarted: rs };
    });
    await restarted;
    await cell;
    assert.deepEqual(order, ['cell:KH_ECANCELED', 'restarted']);
    // The kernel is fresh and runs cells again.
    const r = await k.execute("'y' in globals()");
    assert.equal(r.result.data['text/plain'], 'False');
    assert.equal(r.executionCount, 1);
  });

  it('stream_write_semantics', async function () {
    const { k } = await kernel();
    const r = await k.execute(
      'import sys\n' +
      "n = sys.stdout.write('abc')\n" +
      "sys.stdout.write('')\n" +
      "print('', n)\n" +
      "try:\n    sys.stdout.write(b'x')\nexcept TypeError as e:\n    print('TypeError')\n" +
      "sys.stdout.flush(); sys.stderr.writelines(['e1', 'e2\\n'])\n" +
      'print(sys.stdout.isatty(), sys.stdout.encoding)\n');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(streamText(r, true),
      'stdout:abc 3\nTypeError\nstderr:e1e2\nstdout:False utf-8\n');
  });

  it('manager_bad_options', async function () {
    const { KernelManager } = kernelhost;
    assert.throws(() => new KernelManager({ maxCodeBytes: 'big' }), (e) => {
      assert.equal(e.code, 'KH_EOPTION');
      assert.match(e.message, /maxCodeBytes/);
      return true;
    });
    assert.throws(() => new KernelManager({ bogus: 1 }), (e) => {
      assert.equal(e.code, 'KH_EOPTION');
      assert.match(e.message, /bogus/);
      return true;
    });
    // (C's kh_manager_new(NULL loop) -> KH_EINVAL has no Node form: the addon always passes
    // Node's loop. Non-object options are misuse here.)
    assert.throws(() => new KernelManager('opts'), TypeError);
    assert.throws(() => new KernelManager([]), TypeError);
  });
});

describe('more (inactivity)', function () {
  it('kernel_inactivity_dead_is_final', async function () {
    const kh = require('../..');
    const m = new kh.KernelManager();
    try {
      const mode = process.env.KH_TEST_MODE || 'main_thread';
      const id = await m.createKernel({ mode, inactivityTimeout: 50 });
      const k = m.getKernel(id);
      // From the listener of the "dead" status, the kernel is already on its way out.
      const code = await new Promise((resolve) => {
        m.onKernelEvent(id, kh.KernelEvents.STATUS, (d) => {
          if (d.execution_state !== 'dead') return;
          k.execute('1').then(() => resolve('ran'), (e) => resolve(e.code));
        });
      });
      require('node:assert').equal(code, 'KH_ECLOSED');
      require('node:assert').equal(m.getKernelInfo(id), undefined);
    } finally {
      await m.close();
    }
  });
});

describe('more (host thread)', function () {
  it('kernel_host_thread', async function () {
    const assert = require('node:assert');
    const kh = require('../..');
    const m = new kh.KernelManager();
    try {
      // thread "host": the cell runs on the JS thread, inside the call that starts it
      const id = await m.createKernel({ mode: 'main_thread', thread: 'host' });
      const k = m.getKernel(id);
      const texts = [];
      m.onKernelEvent(id, kh.KernelEvents.STREAM, (d) => texts.push(d.text));
      let r = await k.execute("print('a')\nx = 2\nx * 21");
      assert.equal(r.status, 'ok');
      assert.equal(r.result.data['text/plain'], '42');
      assert.equal(r.outputs[0].data.execution_state, 'busy');
      assert.equal(r.outputs[1].type, 'stream');
      assert.deepEqual(texts, ['a\n']);
      assert.equal((await k.execute('x + 1')).result.data['text/plain'], '3');
      // nothing can answer input() while the host thread runs the cell
      assert.equal((await k.execute("input('? ')")).error.ename, 'RuntimeError');
      // what needs a kernel thread is refused
      await assert.rejects(k.execute('1', { timeout: 100 }), { code: 'KH_ENOTSUP' });
      await assert.rejects(m.createKernel({ mode: 'worker', thread: 'host' }),
        { code: 'KH_ENOTSUP' });
      await assert.rejects(
        m.createKernel({ mode: 'main_thread', thread: 'host', maxExecutionTime: 100 }),
        { code: 'KH_ENOTSUP' });
      await assert.rejects(m.createKernel({ mode: 'main_thread', thread: 'fast' }),
        { code: 'KH_EOPTION' });
      // restart gives a fresh namespace
      await k.restart();
      r = await k.execute("'x' in globals()");
      assert.equal(r.result.data['text/plain'], 'False');
      assert.equal(r.executionCount, 1);
      await m.destroyKernel(id);
    } finally {
      await m.close();
    }
  });
});
