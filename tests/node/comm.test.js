// comm.test.js: what a case file cannot hold about comms in Node: the host's bad input as
// JavaScript can spell it (misuse throws a TypeError; what the core refuses throws an Error with
// a code) and the Comm object itself. The rest is data: tests/cases/comm.json.
'use strict';

const { assert, kernelhost, manager, kernel, closeAll, opts, recorder } = require('./helpers');

function throwsCode(fn, code) {
  assert.throws(fn, (err) => {
    assert.ok(!(err instanceof TypeError), `a TypeError, not ${code}: ${err.message}`);
    assert.equal(err.code, code, err.message);
    assert.equal(typeof err.message, 'string');
    return true;
  });
}

describe('comm', function () {
  afterEach(closeAll);

  it('comm_bad_input', async function () {
    const { m, k } = await kernel();
    const rec = recorder(m);
    // Misuse throws TypeError: a target that is no string, data or options of the wrong type,
    // unknown options.
    assert.throws(() => k.openComm(), TypeError);
    assert.throws(() => k.openComm(5), TypeError);
    assert.throws(() => k.openComm('t', 5), TypeError);
    assert.throws(() => k.openComm('t', 'data'), TypeError);
    assert.throws(() => k.openComm('t', [1, 2]), TypeError);
    assert.throws(() => k.openComm('t', {}, { bogus: 1 }), TypeError);
    assert.throws(() => k.openComm('t', {}, { commId: 5 }), TypeError);
    assert.throws(() => k.openComm('t', {}, { metadata: 'm' }), TypeError);
    assert.throws(() => k.openComm('t', {}, 'opts'), TypeError);
    assert.throws(() => k.comm(7), TypeError);
    assert.throws(() => k.comm('c').send(7), TypeError);
    assert.throws(() => k.comm('c').close({}, { commId: 'other' }), TypeError);
    assert.throws(() => k.openComm('t', {}, { buffers: Buffer.from('x') }), TypeError);
    assert.throws(() => k.openComm('t', {}, { buffers: ['bytes'] }), TypeError);
    assert.throws(() => k.openComm('t', {}, { buffers: [{ length: 1 }] }), TypeError);
    assert.throws(() => k.comm('c').send({}, { buffers: new Array(65).fill(Buffer.from('x')) }),
      RangeError);
    // What the core refuses throws an Error with its code: an empty or overlong comm id, text
    // that is not Unicode (a lone surrogate is written by JSON.stringify as an escape no JSON
    // reader takes), a comm that is not open, an id open already.
    throwsCode(() => k.openComm('t', {}, { commId: '' }), 'KH_EINVAL');
    throwsCode(() => k.openComm('t', {}, { commId: 'x'.repeat(300) }), 'KH_EINVAL');
    throwsCode(() => k.openComm('t', { s: '\ud800' }), 'KH_EINVAL');
    throwsCode(() => k.comm('never').send({ a: 1 }), 'KH_ECLOSED');
    throwsCode(() => k.comm('never').close(), 'KH_ECLOSED');
    await k.execute("import comm\npy = comm.create_comm(target_name='x', comm_id='py1')");
    throwsCode(() => k.openComm('t', undefined, { commId: 'py1' }), 'KH_EINVAL');
    // Nothing was queued by any of them: the cell above is the kernel's only request.
    assert.equal(rec.count((e) => e.type === 'status' && e.data.execution_state === 'busy' &&
      e.data.executionId !== ''), 1);
    // A kernel that is gone, a manager that is closed.
    await m.destroyKernel(k.id);
    throwsCode(() => k.openComm('t'), 'KH_ENOTFOUND');
    throwsCode(() => k.comm('py1').send(), 'KH_ENOTFOUND');
    const m2 = manager();
    const k2 = m2.getKernel(await m2.createKernel(opts()));
    const c2 = k2.comm('c');
    await m2.close();
    throwsCode(() => k2.openComm('t'), 'KH_ECLOSED');
    throwsCode(() => c2.send(), 'KH_ECLOSED');
  });

  it('comm_object_fields', async function () {
    // openComm gives a Comm with the comm's id (generated like Python's uuid4().hex when not
    // given), its target and kernel; kernel.comm(id) gives that same object while the comm is
    // open, and a new one once it closed.
    const { k } = await kernel();
    await k.execute("import comm\ncomm.get_comm_manager().register_target('t', lambda c, m: None)");
    const c = k.openComm('t');
    assert.ok(c instanceof kernelhost.Comm);
    assert.match(c.commId, /^[0-9a-f]{32}$/);
    assert.equal(c.targetName, 't');
    assert.equal(c.kernel, k);
    assert.equal(k.comm(c.commId), c);
    const named = k.openComm('t', { a: 1 }, { commId: 'mine', metadata: { m: 1 } });
    assert.equal(named.commId, 'mine');
    assert.equal(k.comm('mine'), named);
    named.close();
    const again = k.comm('mine');
    assert.notEqual(again, named);
    assert.equal(again.targetName, undefined);
    throwsCode(() => again.send(), 'KH_ECLOSED');
  });
});
