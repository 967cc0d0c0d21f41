// delivery.test.js: the delivery rule seen from Node (tests/c/test_delivery.c): no listener runs
// and no promise settles inside the API call that caused it; events, replies and cancellations
// come from the loop, in order. So a retry issued from a rejection handler meets a kernel whose
// state is settled. Also interruptGraceMs: 0, whose timers once spun the loop. In the mode under
// test (KH_TEST_MODE).
'use strict';

const util = require('node:util');
const {
  assert, kernelhost, MODE, manager, kernel, closeAll, busy, rejects, quiet, opts,
} = require('./helpers');

const WORKER = kernelhost.KernelMode.WORKER;

// True while `p` has not settled. A handler attached with then() runs later whenever the promise
// settled, so only the promise's own state, which util.inspect reads synchronously, tells
// "rejected inside the call" from "rejected from the loop afterwards".
function pending(p) {
  return util.inspect(p).includes('<pending>');
}

// Mocha's this.skip() takes no reason: put the reason in the title the reporter prints.
function skip(ctx, reason) {
  ctx.test.title += ` (skipped: ${reason})`;
  ctx.skip();
}

// A kernel busy with an endless cell and one request queued behind it; `retry` runs in the
// queued request's rejection handler, which must see KH_ECANCELED. Resolves once the cell runs.
async function busyWithRetry(retry) {
  const { m, id, k } = await kernel();
  const started = busy(m, id);
  const running = quiet(k.execute('while True: pass'));
  const queued = quiet(k.execute('1'));
  await started;
  const retried = queued.then(() => assert.fail('the queued request ran'), (err) => {
    assert.equal(err.code, 'KH_ECANCELED');
    return retry(k);
  });
  return { m, id, k, running, queued, retried };
}

describe('delivery', function () {
  afterEach(closeAll);

  it('delivery_retry_after_timeout', async function () {
    const { k } = await kernel({}, { interruptGraceMs: 300 });
    if (MODE === WORKER) {
      // A worker that ignores SIGINT is killed and restarted when the timeout's interrupt does
      // not land within the grace: the request fails while the kernel restarts. Set in a cell
      // of its own so that the timeout cannot fire before the cell ignores SIGINT.
      const r = await k.execute('import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)');
      assert.equal(r.status, 'ok', JSON.stringify(r.error));
    }
    // The retry is the continuation of the first request: nothing runs between them.
    const first = await k.execute('while True: pass', { timeout: 200 }).catch((err) => err);
    const r = await k.execute('1+1');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '2');
    if (MODE === WORKER) assert.equal(first.code, 'KH_EKERNELDEAD', first.message);
    else assert.equal(first.error.ename, 'KeyboardInterrupt');
  });

  it('delivery_retry_after_crash_autorestart', async function () {
    if (MODE !== WORKER) {
      skip(this, 'worker mode only: a crashing cell in main_thread mode kills the host process');
    }
    const { k } = await kernel({ autoRestart: true });
    const first = await k.execute('import ctypes\nctypes.string_at(0)').catch((err) => err);
    assert.equal(first.code, 'KH_EKERNELDEAD', first.message);
    // Issued from the rejection's continuation: the kernel is restarting by then, so the request
    // waits for the fresh process instead of meeting a dead kernel.
    const r = await k.execute('1+1');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '2');
  });

  it('delivery_retry_after_restart', async function () {
    const { k, running, queued, retried } = await busyWithRetry((kk) => kk.execute('1+1'));
    const restarted = k.restart();
    assert.ok(pending(running), 'the running request settled inside restart()');
    assert.ok(pending(queued), 'the queued request settled inside restart()');
    const r = await retried;
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '2');
    await restarted;
    // As in kernel_restart: the running cell is canceled, or its interrupt won the race.
    const [r1] = await Promise.allSettled([running]);
    assert.ok(r1.status === 'rejected' ? r1.reason.code === 'KH_ECANCELED'
      : r1.value.status === 'error', JSON.stringify(r1));
  });

  it('delivery_callbacks_after_destroy', async function () {
    const { m, id, running, queued, retried } = await busyWithRetry(
      (k) => k.execute('1').then(() => 'resolved', (e) => e.code));
    const destroyed = m.destroyKernel(id);
    assert.ok(pending(running), 'the running request settled inside destroyKernel()');
    assert.ok(pending(queued), 'the queued request settled inside destroyKernel()');
    await rejects(running, 'KH_ECANCELED');
    // The retry is refused: the kernel is on its way out, never back. The cancellation is
    // delivered before the kernel is released (the core queues the release behind it), so the
    // kernel is still closing then, whichever thread finished first.
    assert.equal(await retried, 'KH_ECLOSED');
    await destroyed;
    assert.equal(m.getKernel(id), undefined);
  });

  it('delivery_busy_not_inside_execute', async function () {
    const { m, id, k } = await kernel();
    const seen = [];
    m.onKernelEvent(id, 'status', (d) => seen.push([d.execution_state, d.executionId]));
    m.on('kernelEvent', (e) => seen.push([`kernelEvent:${e.type}`, e.data.executionId]));
    const p = k.execute('1');
    assert.deepEqual(seen, [], 'an event was emitted inside execute()');
    const r = await p;
    const execId = r.outputs[0].data.executionId;
    assert.deepEqual(seen.filter((e) => e[1] === execId).map((e) => e[0]), ['busy',
      'kernelEvent:status', 'kernelEvent:execute_result', 'idle', 'kernelEvent:status']);
    // A stream sees its request's first event, which no longer needs holding back.
    const stream = k.executeStream('2');
    const first = await stream.next();
    assert.equal(first.value.type, 'status');
    assert.equal(first.value.data.execution_state, 'busy');
    await stream.return();
  });
});

// interruptGraceMs at its edge, 0: every path that waits out the grace (a time limit, destroying
// or closing with a busy kernel) still settles. A hang is the failure: mocha's timeout (or
// ctest's, should the loop spin) reports it; nothing here measures time.
describe('grace', function () {
  afterEach(closeAll);

  it('grace_zero_time_limit', async function () {
    const { k } = await kernel({ maxExecutionTime: 200 }, { interruptGraceMs: 0 });
    const outcome = await k.execute('while True: pass').then(
      (r) => (r.status === 'error' ? r.error.ename : r.status), (err) => err.code);
    // main_thread: the interrupt lands. Worker: SIGINT lands too, unless the grace of 0 ms runs
    // out first and the worker is killed and restarted (the request fails KH_EKERNELDEAD).
    const allowed = MODE === WORKER ? ['KeyboardInterrupt', 'KH_EKERNELDEAD'] : ['KeyboardInterrupt'];
    assert.ok(allowed.includes(outcome), outcome);
    assert.equal((await k.execute('1+1')).result.data['text/plain'], '2');
  });

  it('grace_zero_destroy_busy', async function () {
    const { m, id, k } = await kernel({}, { interruptGraceMs: 0 });
    const started = busy(m, id);
    const running = quiet(k.execute('while True: pass'));
    await started;
    await m.destroyKernel(id);
    await rejects(running, 'KH_ECANCELED');
    assert.equal(m.getKernel(id), undefined);
    assert.deepEqual(m.listKernels(), []);
  });

  it('grace_zero_close_busy', async function () {
    const m = manager({ interruptGraceMs: 0 });
    const id = await m.createKernel(opts());
    const k = m.getKernel(id);
    const started = busy(m, id);
    const running = quiet(k.execute('while True: pass'));
    await started;
    await m.close();
    await rejects(running, 'KH_ECANCELED');
    assert.deepEqual(m.listKernels(), []);
  });
});
