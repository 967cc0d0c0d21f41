// lifecycle.test.js: what needs code about a kernel's life, from Node: destroy and close with
// work in flight, ids, listing, namespaces, inactivity timeouts, and calls made from promise
// continuations. Restart, interrupts and the request queue are data: tests/cases/.
'use strict';

const {
  assert, kernelhost, MODE, opts, manager, kernel, closeAll, busy, rejects, quiet, nextEvent,
} = require('./helpers');

const { KernelEvents } = kernelhost;

describe('lifecycle', function () {
  afterEach(closeAll);

  it('kernel_destroy_cancels', async function () {
    const { m, id, k } = await kernel();
    const started = busy(m, id);
    const running = quiet(k.execute('while True: pass'));
    const queued = quiet(k.execute('1'));
    await started;
    const destroyed = m.destroyKernel(id);
    // While the destroy is under way the kernel is closing; once it is done, it is unknown.
    await rejects(k.execute('1'), 'KH_ECLOSED');
    await destroyed;
    await rejects(running, 'KH_ECANCELED');
    await rejects(queued, 'KH_ECANCELED');
    assert.equal(m.getKernel(id), undefined);
    await rejects(k.execute('1'), 'KH_ENOTFOUND');
  });

  it('kernel_destroy_twice', async function () {
    const m = manager();
    const id = await m.createKernel(opts());
    const first = m.destroyKernel(id);
    await rejects(m.destroyKernel(id), 'KH_ECLOSED');
    await first;
    await rejects(m.destroyKernel(id), 'KH_ENOTFOUND');
    const id2 = await m.createKernel(opts());
    assert.equal((await m.getKernel(id2).execute('1')).status, 'ok');
  });

  it('kernel_unknown_id', async function () {
    const { m, id, k } = await kernel();
    assert.equal(m.getKernel('no-such-kernel'), undefined);
    assert.equal(m.getKernel('x'.repeat(10000)), undefined);
    await rejects(m.destroyKernel('no-such-kernel'), 'KH_ENOTFOUND');
    await m.destroyKernel(id);
    // The core unlinks a kernel before its destroy callback runs: gone means unknown.
    const gone = 'KH_ENOTFOUND';
    await rejects(k.execute('1'), gone);
    await rejects(k.interrupt(), gone);
    await rejects(k.restart(), gone);
    await rejects(k.inputReply('x'), gone);
    assert.throws(() => m.getKernel(42), TypeError);
    assert.throws(() => m.destroyKernel(null), TypeError);
  });

  it('kernel_ids', async function () {
    const m = manager();
    const a = await m.createKernel(opts());
    const b = await m.createKernel(opts());
    assert.equal(typeof a, 'string');
    assert.notEqual(a, b);
    const mine = await m.createKernel(opts({ id: 'my-kernel' }));
    assert.equal(mine, 'my-kernel');
    await rejects(m.createKernel(opts({ id: 'my-kernel' })), 'KH_EEXIST');
    const k = m.getKernel('my-kernel');
    assert.equal(k.id, 'my-kernel');
    assert.equal(k.mode, MODE);
    assert.equal(m.getKernel('my-kernel'), k);
  });

  it('manager_list_namespace', async function () {
    const m = manager();
    const a1 = await m.createKernel(opts({ namespace: 'a' }));
    const a2 = await m.createKernel(opts({ namespace: 'a' }));
    const b1 = await m.createKernel(opts({ namespace: 'b' }));
    const d = await m.createKernel(opts());
    assert.deepEqual(m.listKernels('a').map((k) => k.id).sort(), [a1, a2].sort());
    assert.deepEqual(m.listKernels('b').map((k) => k.id), [b1]);
    assert.deepEqual(m.listKernels().map((k) => k.id).sort(), [a1, a2, b1, d].sort());
    assert.deepEqual(m.listKernels('none'), []);
    const info = m.listKernels('b')[0];
    assert.equal(info.mode, MODE);
    assert.equal(info.namespace, 'b');
    assert.equal(typeof info.executionCount, 'number');
    assert.throws(() => m.listKernels(3), TypeError);
    // one kernel's details, with its options
    const one = m.getKernelInfo(b1);
    assert.equal(one.id, b1);
    assert.equal(one.options.namespace, 'b');
    assert.equal(one.mode, MODE);
    assert.equal(m.getKernelInfo('nope'), undefined);
    assert.throws(() => m.getKernelInfo(3), TypeError);
  });

  it('manager_destroy_all', async function () {
    const m = manager();
    await m.createKernel(opts({ namespace: 'a' }));
    await m.createKernel(opts({ namespace: 'a' }));
    const b = await m.createKernel(opts({ namespace: 'b' }));
    assert.equal(await m.destroyAll('a'), 2);
    assert.deepEqual(m.listKernels().map((k) => k.id), [b]);
    assert.equal(await m.destroyAll('a'), 0);
    assert.equal(await m.destroyAll(), 1);
    assert.deepEqual(m.listKernels(), []);
  });

  it('manager_close_cancels', async function () {
    const m = new kernelhost.KernelManager();
    const id = await m.createKernel(opts());
    const k = m.getKernel(id);
    const started = busy(m, id);
    const running = quiet(k.execute('while True: pass'));
    const queued = quiet(k.execute('1'));
    await started;
    await m.close();
    await rejects(running, 'KH_ECANCELED');
    await rejects(queued, 'KH_ECANCELED');
    await rejects(k.execute('1'), 'KH_ECLOSED');
    await rejects(m.createKernel(opts()), 'KH_ECLOSED');
    assert.deepEqual(m.listKernels(), []);
    assert.equal(m.getKernel(id), undefined);
    await m.close(); // a second close is the same close
  });

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

  it('kernel_inactivity_dead_is_final', async function () {
    // The listener is there before the kernel: its 50 ms may run out before create resolves.
    const m = manager();
    const id = 'inactivity-dead-final';
    let k; // set when create resolves, in the same turn of the loop: before any timer fires
    const code = new Promise((resolve) => {
      m.onKernelEvent(id, KernelEvents.STATUS, (d) => {
        if (d.execution_state !== 'dead') return;
        // From the listener of the "dead" status, the kernel is already on its way out.
        k.execute('1').then(() => resolve('ran'), (e) => resolve(e.code));
      });
    });
    assert.equal(await m.createKernel(opts({ id, inactivityTimeout: 50 })), id);
    k = m.getKernel(id);
    assert.equal(await code, 'KH_ECLOSED');
    assert.equal(m.getKernelInfo(id), undefined);
  });
});
