// bus.test.js: subscriptions from Node: filters by kernel and type, the kernelEvent emitter,
// removing listeners inside a listener. (Busy/idle bracketing is data: tests/cases/status.json.)
'use strict';

const { assert, kernelhost, opts, manager, kernel, closeAll } = require('./helpers');

const { KernelEvents } = kernelhost;

describe('bus', function () {
  afterEach(closeAll);

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
});
