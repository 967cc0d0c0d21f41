// errors.test.js: the error codes every failure carries, and misuse, which throws a TypeError or
// RangeError instead of rejecting with a code. Options the core refuses are data:
// tests/cases/options.json.
'use strict';

const { assert, kernelhost, manager, kernel, closeAll } = require('./helpers');

const { KernelMode, KernelEvents, ErrorCodes } = kernelhost;

describe('errors', function () {
  afterEach(closeAll);

  it('api_misuse_refused', async function () {
    const { m, k } = await kernel();
    // Options that are not an object, for a kernel or a manager, are misuse: TypeError.
    // (C's kh_manager_new with no loop -> KH_EINVAL has no Node form: the addon always passes
    // Node's loop.)
    assert.throws(() => m.createKernel('main_thread'), TypeError);
    assert.throws(() => m.createKernel([]), TypeError);
    assert.throws(() => new kernelhost.KernelManager(5), TypeError);
    assert.throws(() => new kernelhost.KernelManager('opts'), TypeError);
    assert.throws(() => new kernelhost.KernelManager([]), TypeError);
    // Execute options of the wrong type, range or name, code that is not a string.
    assert.throws(() => k.execute('1', { timeout: -1 }), RangeError);
    assert.throws(() => k.execute('1', { timeout: '5' }), TypeError);
    assert.throws(() => k.execute('1', { silent: 1 }), TypeError);
    assert.throws(() => k.execute('1', { allowStdin: 'no' }), TypeError);
    assert.throws(() => k.execute('1', { allow_stdin: false }), TypeError);
    assert.throws(() => k.execute('1', { bogus: true }), TypeError);
    assert.throws(() => k.execute(42), TypeError);
    // An input reply that is not a string.
    assert.throws(() => k.inputReply(3), TypeError);
    // Misuse leaves nothing behind: the kernel is the only one, and it works.
    assert.equal(m.listKernels().length, 1);
    assert.equal((await k.execute('1')).status, 'ok');
  });

  it('options_nan_infinity', async function () {
    // JSON.stringify writes NaN and the infinities as null, which would read as "not given"
    // (maxExecutionTime: NaN as "no limit"): they are bad values, KH_EOPTION naming the option.
    const m = manager();
    for (const v of [NaN, Infinity, -Infinity]) {
      await assert.rejects(m.createKernel({ mode: kernelhost.KernelMode.MAIN_THREAD, maxExecutionTime: v }),
        (e) => e.code === 'KH_EOPTION' && e.message.includes('maxExecutionTime'));
    }
    await assert.rejects(m.createKernel({ limits: { memoryBytes: Infinity } }),
      (e) => e.code === 'KH_EOPTION' && e.message.includes('limits.memoryBytes'));
    assert.throws(() => new kernelhost.KernelManager({ interruptGraceMs: NaN }),
      (e) => e.code === 'KH_EOPTION' && e.message.includes('interruptGraceMs'));
    assert.equal(m.listKernels().length, 0);
  });

  it('error_names', async function () {
    const names = Object.keys(ErrorCodes);
    for (const n of ['KH_EINVAL', 'KH_ENOTFOUND', 'KH_ECLOSED', 'KH_ECANCELED', 'KH_EKERNELDEAD',
      'KH_ENOTSUP', 'KH_EEXIST', 'KH_ENOMEM', 'KH_EPYTHON', 'KH_EENCODING',
      'KH_ETOOBIG', 'KH_EOPTION', 'KH_EBUSY', 'KH_EPROTO', 'KH_EWORKER', 'KH_EREMOTE', 'KH_EAUTH']) {
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
