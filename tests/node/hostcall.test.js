// hostcall.test.js: host functions from Node: kernel.expose(name, fn) with functions that answer
// with their value or a Promise, the values a call carries both ways (Buffers for bytes, BigInt
// beyond 2^53), errors, interrupts, destroys and re-entrant requests. Names match tests/c and
// tests/lua; every test runs in the mode under test (KH_TEST_MODE).
'use strict';

const v8 = require('node:v8');
const vm = require('node:vm');
const { assert, kernel, manager, opts, closeAll, rejects, quiet } = require('./helpers');

const py = (...lines) => lines.join('\n');

// Runs code; returns the text/plain of its result. Fails the test when the cell raised.
async function value(k, code) {
  const r = await k.execute(code);
  assert.equal(r.status, 'ok', r.error && `${r.error.ename}: ${r.error.evalue}`);
  return r.result && r.result.data['text/plain'];
}

// Runs code that must raise; returns the reply's error ({ename, evalue, traceback}).
async function raised(k, code) {
  const r = await k.execute(code);
  assert.equal(r.status, 'error', 'the cell did not raise');
  return r.error;
}

// The message of the HostError the call `expr` raises in Python ('no error' when it returns).
function hostErrorOf(k, expr) {
  return value(k, py('import kernelhost', 'try:', `    ${expr}`, "    r = 'no error'",
    'except kernelhost.HostError as e:', '    r = str(e)', 'r'));
}

// A promise and its resolve/reject, for answers the test gives later.
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

// Resolves once `n` entries are in `list` (pushed by a host function), waiting for real calls.
function waitLength(list, n) {
  return new Promise((resolve) => {
    const check = () => (list.length >= n ? resolve() : setImmediate(check));
    check();
  });
}

describe('hostcall', function () {
  afterEach(closeAll);

  it('node_hostcall_expose', async function () {
    const { k } = await kernel();
    const seen = [];
    assert.equal(k.expose('add', (a, b) => {
      seen.push([a, b]);
      return a + b;
    }), k);
    const p = k.execute('import kernelhost\nkernelhost.host.add(2, 3)');
    assert.equal(seen.length, 0); // never inside the call that started the cell
    const r = await p;
    assert.equal(r.result.data['text/plain'], '5');
    assert.equal(await value(k, "kernelhost.call('add', 3, 4)"), '7');
    assert.deepEqual(seen, [[2, 3], [3, 4]]);
    // `this` is undefined: a host function is called as a plain function.
    k.expose('self', function () { return this === undefined; });
    assert.equal(await value(k, 'kernelhost.host.self()'), 'True');
    // The same name again replaces the function; null withdraws it.
    k.expose('add', (a, b) => a * b);
    assert.equal(await value(k, 'kernelhost.host.add(2, 3)'), '6');
    k.expose('add', null);
    assert.match((await raised(k, 'kernelhost.host.add(2, 3)')).evalue, /add/);
    assert.equal(seen.length, 2);
    // Misuse throws TypeError; a name Python cannot spell is the core's KH_EINVAL.
    assert.throws(() => k.expose(1, () => {}), TypeError);
    assert.throws(() => k.expose('f', 42), TypeError);
    assert.throws(() => k.expose('f'), TypeError); // undefined is no way to withdraw
    assert.throws(() => k.expose('not a name', () => {}), (e) => e.code === 'KH_EINVAL');
    assert.throws(() => k.expose('', () => {}), (e) => e.code === 'KH_EINVAL');
  });

  it('hostcall_value_types', async function () {
    const { k } = await kernel();
    let got;
    k.expose('echo', (...args) => {
      got = args;
      return args[0];
    });
    // Python -> JS: None is null; ints are numbers while they are safe integers (|n| < 2^53)
    // and BigInts beyond, exactly.
    await value(k, py('import kernelhost',
      "kernelhost.host.echo(None, True, 2**53 - 1, -(2**53 - 1), 2**53, 2**63 - 1, -2**63, 1.5, 'é😀',",
      "                     [1, None, [2]], {'a': {'b': None}, '__proto__': 1})"));
    assert.equal(got.length, 11);
    assert.equal(got[0], null);
    assert.equal(got[1], true);
    assert.equal(got[2], Number.MAX_SAFE_INTEGER);
    assert.equal(got[3], -Number.MAX_SAFE_INTEGER);
    assert.equal(got[4], 2n ** 53n);
    assert.equal(got[5], 2n ** 63n - 1n);
    assert.equal(got[6], -(2n ** 63n));
    assert.equal(got[7], 1.5);
    assert.equal(got[8], 'é😀');
    assert.deepEqual(got[9], [1, null, [2]]);
    assert.equal(got[10].a.b, null);
    // A key named __proto__ is an own property, as JSON.parse makes it, not the prototype.
    assert.ok(Object.prototype.hasOwnProperty.call(got[10], '__proto__'));
    assert.equal(Object.getPrototypeOf(got[10]), Object.prototype);
    // Python -> JS -> Python: every value comes back equal and of its type (a float with an
    // integral value is the exception: JS has one number type, and 2.0 comes back as 2).
    assert.equal(await value(k, py(
      "vals = [None, True, False, 0, -1, 2**53, 2**53 + 1, 2**63 - 1, -2**63, 1.5, -0.25, '',",
      "        'é😀', [], [1, [2, [3]]], {}, {'a': 1, 'b': [None, {'c': 'd'}]}]",
      'out = [kernelhost.host.echo(v) for v in vals]',
      'assert out == vals, out',
      'assert [type(x) for x in out] == [type(v) for v in vals], out',
      'kernelhost.host.echo(2.0), type(kernelhost.host.echo(2.0)).__name__')), "(2, 'int')");
    // JS -> Python.
    k.expose('jsValues', () => ({
      num: 3, float: 0.5, big: 2n ** 62n, neg: -(2n ** 63n), str: 'é', nul: null, yes: false,
      arr: [1, [2, { x: [] }]], undef: undefined, holes: [undefined, 1], empty: {},
    }));
    assert.equal(await value(k, py('v = kernelhost.host.jsValues()',
      "want = {'num': 3, 'float': 0.5, 'big': 2**62, 'neg': -2**63, 'str': 'é', 'nul': None,",
      "        'yes': False, 'arr': [1, [2, {'x': []}]], 'holes': [None, 1], 'empty': {}}",
      'assert v == want, v',
      'True')), 'True');
    // undefined (or no return) is None.
    k.expose('nothing', () => {});
    k.expose('undef', () => undefined);
    assert.equal(await value(k, 'kernelhost.host.nothing(), kernelhost.host.undef()'),
      '(None, None)');
  });

  it('node_hostcall_binary_values', async function () {
    const { k } = await kernel();
    let got;
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    k.expose('take', (...args) => {
      got = args;
      return args[0].length;
    });
    // Python bytes arrive as Buffers, byte for byte, at any depth; str stays a string.
    assert.equal(await value(k, py('import kernelhost',
      "kernelhost.host.take(bytes(range(256)), b'', {'blob': b'\\x00\\xff', 'list': [b'\\x80']}, 'ab')")),
    '256');
    assert.ok(Buffer.isBuffer(got[0]));
    assert.ok(got[0].equals(all));
    assert.ok(Buffer.isBuffer(got[1]) && got[1].length === 0);
    assert.ok(got[2].blob.equals(Buffer.from([0, 255])));
    assert.ok(got[2].list[0].equals(Buffer.from([128])));
    assert.equal(got[3], 'ab');
    // JS binary values go back as bytes: Buffer, Uint8Array, other typed arrays (their bytes),
    // ArrayBuffer, nested anywhere.
    k.expose('give', (v) => v);
    k.expose('blobs', () => ({
      buf: all, u8: new Uint8Array([1, 2]), u16: new Uint16Array([0x0201]),
      ab: new Uint8Array([7, 8]).buffer, deep: [[Buffer.from('\xff\xfe', 'latin1')]],
      slice: all.subarray(10, 12), empty: Buffer.alloc(0),
    }));
    assert.equal(await value(k, py(
      'assert kernelhost.host.give(bytes(range(256))) == bytes(range(256))',
      "assert kernelhost.host.give(b'abc') == b'abc'",
      'v = kernelhost.host.blobs()',
      "want = {'buf': bytes(range(256)), 'u8': b'\\x01\\x02', 'u16': b'\\x01\\x02', 'ab': b'\\x07\\x08',",
      "        'deep': [[b'\\xff\\xfe']], 'slice': b'\\x0a\\x0b', 'empty': b''}",
      'assert v == want, v',
      'True')), 'True');
  });

  it('node_hostcall_throw_and_reject', async function () {
    const { k } = await kernel();
    k.expose('fails', (how) => {
      if (how === 'error') throw new Error('no such entity');
      if (how === 'type') throw new TypeError('wrong kind');
      if (how === 'string') throw 'a thrown string'; // eslint-disable-line no-throw-literal
      if (how === 'reject') return Promise.reject(new Error('rejected later'));
      if (how === 'async') return (async () => { throw new Error('async throw'); })();
      throw { toString() { return "an object's own words"; } }; // eslint-disable-line no-throw-literal
    });
    assert.equal(await hostErrorOf(k, "kernelhost.host.fails('error')"), "'no such entity'");
    assert.equal(await hostErrorOf(k, "kernelhost.host.fails('type')"), "'wrong kind'");
    assert.equal(await hostErrorOf(k, "kernelhost.host.fails('string')"), "'a thrown string'");
    assert.equal(await hostErrorOf(k, "kernelhost.host.fails('reject')"), "'rejected later'");
    assert.equal(await hostErrorOf(k, "kernelhost.host.fails('async')"), "'async throw'");
    assert.equal(await hostErrorOf(k, "kernelhost.host.fails('object')"), "\"an object's own words\"");
    // Unhandled, it is the cell's error; the kernel and the host go on.
    const err = await raised(k, "kernelhost.host.fails('error')");
    assert.equal(err.ename, 'HostError');
    assert.equal(err.evalue, 'no such entity');
    assert.equal(await value(k, '1 + 1'), '2');
  });

  it('node_hostcall_promise', async function () {
    const { k } = await kernel();
    const pending = [];
    k.expose('move', (id, x, y) => {
      const d = deferred();
      pending.push({ d, args: [id, x, y] });
      return d.promise;
    });
    const p = k.execute('import kernelhost\nkernelhost.host.move(3, 1.5, 2)');
    let done = false;
    p.then(() => { done = true; });
    await waitLength(pending, 1);
    assert.deepEqual(pending[0].args, [3, 1.5, 2]);
    // Later turns of the loop pass; the cell waits for the Promise.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(done, false);
    pending[0].d.resolve({ x: 1.5, y: 2 });
    const r = await p;
    assert.equal(r.result.data['text/plain'], "{'x': 1.5, 'y': 2}");
    // A thenable that is no Promise is awaited too.
    k.expose('thenable', () => ({ then(res) { setImmediate(() => res('from then')); } }));
    assert.equal(await value(k, 'kernelhost.host.thenable()'), "'from then'");
  });

  it('node_hostcall_invalid_answer', async function () {
    const { k } = await kernel();
    const cyclic = { a: [] };
    cyclic.a.push(cyclic);
    const bad = {
      nan: NaN, inf: Infinity, ninf: -Infinity, fn: () => 1, sym: Symbol('s'), cyc: cyclic,
      big: 2n ** 64n, deepFn: { a: [{ f() {} }] }, date: new Date(0), map: new Map(),
      set: new Set(), promise: { p: Promise.resolve(1) }, surrogate: '\ud800',
      getter: { get boom() { throw new Error('getter threw'); } },
    };
    k.expose('bad', (which) => bad[which]);
    const why = (which) => hostErrorOf(k, `kernelhost.host.bad('${which}')`);
    assert.match(await why('nan'), /NaN/);
    assert.match(await why('inf'), /Infinity/);
    assert.match(await why('ninf'), /-Infinity/);
    assert.match(await why('fn'), /a function/);
    assert.match(await why('sym'), /a Symbol/);
    assert.match(await why('cyc'), /cycle.* at \/a\/0/);
    assert.match(await why('big'), /BigInt beyond int64/);
    assert.match(await why('deepFn'), /a function at \/a\/0\/f/);
    assert.match(await why('date'), /a Date/);
    assert.match(await why('map'), /a Map/);
    assert.match(await why('set'), /a Set/);
    assert.match(await why('promise'), /a Promise/);
    assert.match(await why('surrogate'), /lone surrogate/);
    assert.match(await why('getter'), /getter threw/);
    assert.match(await why('fn'), /"bad"/); // names the host function
    // A Promise that resolves with one is refused the same way.
    k.expose('badLater', async () => NaN);
    assert.match(await hostErrorOf(k, 'kernelhost.host.badLater()'), /NaN/);
    assert.equal(await value(k, '1 + 1'), '2'); // the kernel goes on
  });

  it('hostcall_interrupt_pending', async function () {
    const { k } = await kernel();
    const pending = [];
    k.expose('wait', () => {
      const d = deferred();
      pending.push(d);
      return d.promise;
    });
    const p = k.execute('import kernelhost\nkernelhost.host.wait()');
    await waitLength(pending, 1);
    await k.interrupt();
    const r = await p;
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
    // The late answer is dropped quietly: nothing throws, no later cell sees it.
    pending[0].resolve('too late');
    const p2 = k.execute('kernelhost.host.wait()');
    await waitLength(pending, 2);
    pending[1].resolve('in time');
    assert.equal((await p2).result.data['text/plain'], "'in time'");
    // A rejection that comes too late is dropped as quietly.
    const p3 = k.execute('kernelhost.host.wait()');
    await waitLength(pending, 3);
    await k.interrupt();
    assert.equal((await p3).error.ename, 'KeyboardInterrupt');
    pending[2].reject(new Error('too late too'));
    assert.equal(await value(k, '1 + 1'), '2');
  });

  it('hostcall_destroy_pending', async function () {
    const { m, id, k } = await kernel();
    const pending = [];
    k.expose('wait', () => {
      const d = deferred();
      pending.push(d);
      return d.promise;
    });
    const p = quiet(k.execute('import kernelhost\nkernelhost.host.wait()'));
    await waitLength(pending, 1);
    await m.destroyKernel(id);
    await rejects(p, 'KH_ECANCELED');
    // The host's late answer settles nothing and throws nowhere.
    pending[0].resolve('late');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(m.getKernel(id), undefined);
    // The same happens when the manager closes under a pending call.
    const id2 = await m.createKernel(opts());
    const k2 = m.getKernel(id2);
    k2.expose('wait', () => {
      const d = deferred();
      pending.push(d);
      return d.promise;
    });
    const p2 = quiet(k2.execute('import kernelhost\nkernelhost.host.wait()'));
    await waitLength(pending, 2);
    await m.close();
    await rejects(p2, 'KH_ECANCELED');
    pending[1].resolve('late');
    await new Promise((resolve) => setImmediate(resolve));
  });

  it('hostcall_dropped_handle_answers', async function () {
    const { k } = await kernel();
    let called = 0;
    // A Promise that never settles, and that nothing refers to once the call returned.
    k.expose('forget', () => {
      called += 1;
      return new Promise(() => {});
    });
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc');
    const p = k.execute(py('import kernelhost', 'try:', '    kernelhost.host.forget()',
      'except kernelhost.HostError as e:', '    r = str(e)', 'r'));
    let done = false;
    p.then(() => { done = true; });
    // Finalizers run after a collection, from the loop: collect on every turn until the cell
    // has its answer (a wait for that event, not for time).
    while (!done) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const r = await p;
    assert.equal(called, 1);
    assert.equal(r.status, 'ok');
    assert.match(r.result.data['text/plain'], /never answered/);
  });
});
