// grace.test.js: manager option interruptGraceMs at its edge, 0 (tests/c's grace_zero_*): every
// path that waits out the grace (a time limit, destroying or closing with a busy kernel) still
// settles, in the mode under test (KH_TEST_MODE). A hang is the failure: mocha's timeout (or
// ctest's, should the loop spin) reports it; no test here measures time.
'use strict';

const {
  assert, kernelhost, MODE, manager, kernel, closeAll, busy, rejects, quiet, opts,
} = require('./helpers');

const WORKER = kernelhost.KernelMode.WORKER;

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
