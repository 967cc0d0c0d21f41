// lifecycle.test.js: interrupt, restart, destroy, ids, namespaces, bad input, the event bus,
// closing, and error codes.
'use strict';

const {
  assert, kernelhost, MODE, opts, manager, kernel, closeAll, busy, rejects, quiet,
} = require('./helpers');

const { KernelMode, KernelEvents, ErrorCodes } = kernelhost;

describe('lifecycle', function () {
  afterEach(closeAll);

  it('kernel_interrupt_busy_loop', async function () {
    const { m, id, k } = await kernel();
    const started = busy(m, id);
    const p = k.execute('while True: pass');
    await started;
    await k.interrupt();
    const r = await p;
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
    assert.equal((await k.execute('1 + 1')).result.data['text/plain'], '2');
  });

  it('kernel_interrupt_sleep', async function () {
    const { m, id, k } = await kernel();
    const started = busy(m, id);
    const p = k.execute('import time\ntime.sleep(600)');
    await started;
    await k.interrupt();
    const r = await p;
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
    assert.equal((await k.execute('2')).status, 'ok');
  });

  it('kernel_restart', async function () {
    const { m, id, k } = await kernel({ namespace: 'rs' });
    await k.execute('x = 1');
    await k.execute('x');
    const started = busy(m, id);
    const running = quiet(k.execute('while True: pass'));
    const queued = quiet(k.execute('1'));
    await started;
    await k.restart();
    // The running cell is interrupted and its request canceled, as are queued ones.
    const [r1] = await Promise.allSettled([running]);
    assert.ok(r1.status === 'rejected' ? r1.reason.code === 'KH_ECANCELED'
      : r1.value.status === 'error', JSON.stringify(r1));
    await rejects(queued, 'KH_ECANCELED');
    const k2 = m.getKernel(id);
    assert.equal(k2.id, id);
    const r = await k2.execute('x');
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'NameError');
    assert.equal(r.executionCount, 1);
    assert.equal(m.listKernels('rs').length, 1);
  }).timeout(120000);

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

  it('kernel_bad_options', async function () {
    const m = manager();
    await rejects(m.createKernel({ mode: 'bogus' }), 'KH_EOPTION');
    await rejects(m.createKernel(opts({ maxExecutionTime: 'soon' })), 'KH_EOPTION');
    await rejects(m.createKernel(opts({ namespace: 7 })), 'KH_EOPTION');
    assert.throws(() => m.createKernel('main_thread'), TypeError);
    assert.throws(() => m.createKernel([]), TypeError);
    assert.throws(() => new kernelhost.KernelManager({ maxCodeBytes: 'big' }),
      (e) => e.code === 'KH_EOPTION');
    assert.throws(() => new kernelhost.KernelManager(5), TypeError);
    // The manager is still usable.
    const id = await m.createKernel(opts());
    assert.equal((await m.getKernel(id).execute('1')).status, 'ok');
  });

  it('kernel_mode_option_unsupported', async function () {
    const m = manager();
    for (const extra of [{ env: { A: '1' } }, { permissions: { read: ['/tmp'] } },
      { filesystem: { enabled: true, root: '/tmp', mountPoint: '/home/user' } }]) {
      await assert.rejects(m.createKernel({ mode: KernelMode.MAIN_THREAD, ...extra }), (e) => {
        assert.equal(e.code, 'KH_ENOTSUP');
        assert.match(e.message, new RegExp(Object.keys(extra)[0]));
        return true;
      });
    }
  });

  it('kernel_invalid_utf8', async function () {
    const { k } = await kernel();
    // JS strings are UTF-16: a lone surrogate cannot be encoded and must not be replaced.
    for (const code of ['x = "\ud800"', '"\udc00"', 'y = 1 # \ud83d']) {
      await rejects(k.execute(code), 'KH_EENCODING');
    }
    assert.equal((await k.execute('"\ud83d\ude00"')).result.data['text/plain'], "'\ud83d\ude00'");
  });

  it('kernel_nul_byte', async function () {
    const { k } = await kernel();
    await rejects(k.execute('x = 1\0'), 'KH_EENCODING');
    assert.equal((await k.execute('1')).status, 'ok');
  });

  it('kernel_huge_cell', async function () {
    const { k } = await kernel();
    await rejects(k.execute('#'.repeat(10 * 1024 * 1024)), 'KH_ETOOBIG');
    await rejects(k.execute(`x = '${'\u00e9'.repeat(2.5 * 1024 * 1024)}'`), 'KH_ETOOBIG');
    assert.equal((await k.execute(`len('${'a'.repeat(1024 * 1024)}')`)).result.data['text/plain'],
      String(1024 * 1024));
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

  it('bus_subscribe_filters', async function () {
    const m = manager();
    const a = await m.createKernel(opts());
    const b = await m.createKernel(opts());
    const gotA = [];
    const gotAll = [];
    const gotB = [];
    const emitted = [];
    m.onKernelEvent(a, KernelEvents.STREAM, (d) => gotA.push(d.text));
    m.onKernelEvent(a, KernelEvents.ALL, (e) => gotAll.push(e.type));
    m.onKernelEvent(b, KernelEvents.EXECUTE_RESULT, (d) => gotB.push(d.data['text/plain']));
    m.on('kernelEvent', (e) => emitted.push(`${e.kernelId === a ? 'a' : 'b'}:${e.type}`));
    await m.getKernel(a).execute("print('to a')\n1");
    await m.getKernel(b).execute("print('to b')\n2");
    assert.deepEqual(gotA, ['to a\n']);
    assert.deepEqual(gotAll, ['status', 'stream', 'execute_result', 'status']);
    assert.deepEqual(gotB, ['2']);
    assert.deepEqual(emitted, ['a:status', 'a:stream', 'a:execute_result', 'a:status',
      'b:status', 'b:stream', 'b:execute_result', 'b:status']);
    assert.throws(() => m.onKernelEvent(a, 'nope', () => {}), RangeError);
    assert.throws(() => m.onKernelEvent(a, 'stream', 'nope'), TypeError);
  });

  it('bus_unsubscribe_in_callback', async function () {
    const { m, id, k } = await kernel();
    const calls = { first: 0, second: 0, self: 0 };
    const second = () => { calls.second++; };
    const first = () => {
      calls.first++;
      m.offKernelEvent(id, 'status', second);
    };
    const self = () => {
      calls.self++;
      m.offKernelEvent(id, 'status', self);
    };
    m.onKernelEvent(id, 'status', first);
    m.onKernelEvent(id, 'status', self);
    m.onKernelEvent(id, 'status', second);
    await k.execute('1');
    assert.deepEqual(calls, { first: 2, second: 0, self: 1 });
    m.offKernelEvent(id, 'status', first);
    await k.execute('2');
    assert.equal(calls.first, 2);
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

  it('error_names', async function () {
    const names = Object.keys(ErrorCodes);
    for (const n of ['KH_EINVAL', 'KH_ENOTFOUND', 'KH_ECLOSED', 'KH_ECANCELED', 'KH_EKERNELDEAD',
      'KH_ENOTSUP', 'KH_EEXIST', 'KH_ENOMEM', 'KH_EPYTHON', 'KH_EENCODING',
      'KH_ETOOBIG', 'KH_EOPTION', 'KH_EBUSY', 'KH_EPROTO', 'KH_EWORKER']) {
      assert.ok(names.includes(n), n);
      assert.ok(ErrorCodes[n] < -4100, n);
    }
    assert.equal(new Set(Object.values(ErrorCodes)).size, names.length);
    assert.ok(Object.isFrozen(ErrorCodes) && Object.isFrozen(KernelMode) &&
      Object.isFrozen(KernelEvents));
    assert.equal(KernelMode.MAIN_THREAD, 'main_thread');
    assert.equal(KernelMode.WORKER, 'worker');
    assert.equal(KernelEvents.EXECUTE_ERROR, 'execute_error');
    assert.equal(KernelEvents.ALL, '*');
    const m = manager();
    const err = await m.destroyKernel('nope').catch((e) => e);
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'KH_ENOTFOUND');
    assert.equal(typeof err.message, 'string');
  });
});
