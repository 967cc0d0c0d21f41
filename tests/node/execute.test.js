// execute.test.js: running cells: results, streams, errors, state, counters, queueing.
'use strict';

const { assert, kernel, opts, manager, closeAll, outputsOf, pythonHas } = require('./helpers');

describe('execute', function () {
  afterEach(closeAll);

  it('kernel_execute_result', async function () {
    const { m, id, k } = await kernel();
    const seen = [];
    m.onKernelEvent(id, 'execute_result', (d) => seen.push(d));
    const r = await k.execute('1 + 1');
    assert.equal(r.status, 'ok');
    assert.equal(r.executionCount, 1);
    assert.equal(r.result.data['text/plain'], '2');
    assert.deepEqual(r.result.metadata, {});
    assert.equal(r.error, undefined);
    assert.deepEqual(r.outputs.map((o) => o.type), ['status', 'execute_result', 'status']);
    assert.equal(r.outputs[0].data.execution_state, 'busy');
    assert.equal(r.outputs[1].data.execution_count, 1);
    assert.equal(r.outputs[2].data.execution_state, 'idle');
    assert.equal(seen.length, 1);
    assert.equal(seen[0].kernelId, id);
    assert.equal(seen[0].executionId, r.outputs[1].data.executionId);
  });

  it('kernel_execute_stream', async function () {
    const { m, id, k } = await kernel();
    const events = [];
    m.onKernelEvent(id, 'stream', (d) => events.push(d));
    const r = await k.execute('for i in range(1000): print(i)');
    assert.equal(r.status, 'ok');
    assert.equal(r.result, undefined);
    assert.ok(events.length >= 1);
    assert.ok(events.length < 100, `${events.length} stream events: not batched`);
    let expect = '';
    for (let i = 0; i < 1000; i++) expect += `${i}\n`;
    assert.ok(events.every((e) => e.name === 'stdout'));
    assert.equal(events.map((e) => e.text).join(''), expect);
    assert.equal(outputsOf(r, 'stream').map((e) => e.text).join(''), expect);
  });

  it('kernel_execute_stream_order', async function () {
    const { k } = await kernel();
    const r = await k.execute(
      "import sys\nprint('a')\ndisplay('b')\nprint('c', file=sys.stderr)\nprint('d')\n'e'");
    const seq = r.outputs.filter((o) => o.type !== 'status').map((o) => {
      if (o.type === 'stream') return `${o.data.name}:${o.data.text}`;
      return `${o.type}:${o.data.data['text/plain']}`;
    });
    assert.deepEqual(seq,
      ['stdout:a\n', "display_data:'b'", 'stderr:c\n', 'stdout:d\n', "execute_result:'e'"]);
  });

  it('kernel_execute_error', async function () {
    const { m, id, k } = await kernel();
    const errors = [];
    m.onKernelEvent(id, 'execute_error', (d) => errors.push(d));
    const r = await k.execute('def f():\n    raise ValueError("bad value")\nf()');
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'ValueError');
    assert.equal(r.error.evalue, 'bad value');
    assert.ok(Array.isArray(r.error.traceback) && r.error.traceback.length > 0);
    assert.ok(r.error.traceback.some((l) => l.includes('bad value')));
    assert.equal(errors.length, 1);
    assert.equal(errors[0].ename, 'ValueError');
    assert.equal((await k.execute('2')).status, 'ok');
  });

  it('kernel_execute_syntax_error', async function () {
    const { k } = await kernel();
    const r = await k.execute('x = 1\n1 +');
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'SyntaxError');
    assert.match(r.error.evalue, /line 2/);
  });

  it('kernel_execute_system_exit', async function () {
    const { k } = await kernel();
    for (const code of ['exit()', 'raise SystemExit(3)', 'import sys; sys.exit(0)']) {
      const r = await k.execute(code);
      assert.equal(r.status, 'error', code);
      assert.equal(r.error.ename, 'SystemExit', code);
    }
    assert.equal((await k.execute('6 * 7')).result.data['text/plain'], '42');
  });

  it('kernel_state_persists', async function () {
    const { k } = await kernel();
    await k.execute('x = 20\ndef g(y): return x + y');
    assert.equal((await k.execute('g(22)')).result.data['text/plain'], '42');
    assert.equal((await k.execute('_')).result.data['text/plain'], '42');
  });

  it('kernel_result_suppressed', async function () {
    const { k } = await kernel();
    for (const code of ['1 + 1;', 'None', 'x = 3']) {
      const r = await k.execute(code);
      assert.equal(r.status, 'ok');
      assert.equal(r.result, undefined, code);
      assert.equal(outputsOf(r, 'execute_result').length, 0, code);
    }
  });

  it('kernel_namespaces_isolated', async function () {
    const m = manager();
    const a = m.getKernel(await m.createKernel(opts()));
    const b = m.getKernel(await m.createKernel(opts()));
    await a.execute('secret = 1');
    const r = await b.execute('secret');
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'NameError');
    assert.equal((await a.execute('secret')).result.data['text/plain'], '1');
  });

  it('kernel_execution_count', async function () {
    const { k } = await kernel();
    assert.equal((await k.execute('1')).executionCount, 1);
    assert.equal((await k.execute('2')).executionCount, 2);
    const silent = await k.execute('3', { silent: true });
    assert.equal(silent.result, undefined);
    assert.equal(outputsOf(silent, 'execute_result').length, 0);
    await k.execute('4', { storeHistory: false });
    assert.equal((await k.execute('5')).executionCount, 3);
    assert.equal((await k.execute('1/0')).executionCount, 4);
  });

  it('kernel_numpy_import', async function () {
    if (!pythonHas('numpy')) this.skip();
    const { k } = await kernel();
    const r = await k.execute('import numpy as np\nint(np.arange(10).sum())');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '45');
  });

  it('kernel_top_level_await', async function () {
    const { k } = await kernel();
    const r = await k.execute('import asyncio\nawait asyncio.sleep(0)\nasync def f(): return 42\nawait f()');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(r.result.data['text/plain'], '42');
  });

  it('stream_thread_output', async function () {
    const { k } = await kernel();
    const r = await k.execute(
      "import threading\nt = threading.Thread(target=lambda: print('from thread'))\n" +
      't.start(); t.join()');
    assert.equal(r.status, 'ok');
    assert.match(outputsOf(r, 'stream').map((s) => s.text).join(''), /from thread/);
  });

  it('kernel_queue_fifo', async function () {
    const { k } = await kernel();
    await k.execute('order = []');
    const ps = [];
    for (let i = 0; i < 20; i++) ps.push(k.execute(`order.append(${i}); print(${i})`));
    const rs = await Promise.all(ps);
    rs.forEach((r, i) => {
      assert.equal(r.status, 'ok');
      assert.equal(r.executionCount, i + 2);
      assert.equal(outputsOf(r, 'stream').map((s) => s.text).join(''), `${i}\n`);
    });
    const r = await k.execute('order == list(range(20))');
    assert.equal(r.result.data['text/plain'], 'True');
  });

  it('kernel_stop_on_error', async function () {
    const { k } = await kernel();
    const [a, b] = await Promise.all([k.execute('1/0'), k.execute('1 + 1')]);
    assert.equal(a.status, 'error');
    assert.equal(b.status, 'aborted');
    const [c, d] = await Promise.all([k.execute('1/0', { stopOnError: false }),
      k.execute('1 + 1')]);
    assert.equal(c.status, 'error');
    assert.equal(d.status, 'ok');
    assert.equal(d.result.data['text/plain'], '2');
  });

  it('kernel_input_request', async function () {
    const { m, id, k } = await kernel();
    const reqs = [];
    m.onKernelEvent(id, 'input_request', (d) => {
      reqs.push(d);
      k.inputReply('bob');
    });
    const r = await k.execute("name = input('name? ')\nname");
    assert.equal(r.status, 'ok');
    assert.equal(r.result.data['text/plain'], "'bob'");
    assert.equal(reqs.length, 1);
    assert.equal(reqs[0].prompt, 'name? ');
    assert.equal(reqs[0].password, false);
    assert.throws(() => k.inputReply(3), TypeError);
  });

  it('kernel_max_execution_time', async function () {
    const { k } = await kernel({ maxExecutionTime: 200 });
    const r = await k.execute('while True: pass');
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
    assert.equal((await k.execute('1')).status, 'ok');
  });

  it('kernel_execute_timeout', async function () {
    const { k } = await kernel();
    const r = await k.execute('while True: pass', { timeout: 100 });
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
    assert.equal((await k.execute('1')).status, 'ok');
    assert.throws(() => k.execute('1', { timeout: -1 }), RangeError);
    assert.throws(() => k.execute('1', { timeout: '5' }), TypeError);
    assert.throws(() => k.execute('1', { silent: 1 }), TypeError);
    assert.throws(() => k.execute('1', { bogus: true }), TypeError);
    assert.throws(() => k.execute(42), TypeError);
  });

  it('status_busy_idle', async function () {
    const { m, id, k } = await kernel();
    const states = [];
    m.onKernelEvent(id, 'status', (d) => states.push([d.execution_state, d.executionId]));
    const r1 = await k.execute('1');
    const r2 = await k.execute('1/0');
    const e1 = r1.outputs[0].data.executionId;
    const e2 = r2.outputs[0].data.executionId;
    assert.notEqual(e1, e2);
    assert.deepEqual(states, [['busy', e1], ['idle', e1], ['busy', e2], ['idle', e2]]);
  });

  it('kernel_unicode_roundtrip', async function () {
    const { k } = await kernel();
    const r = await k.execute("s = 'h\u00e9llo \u4e16\u754c \ud83d\ude00'\nprint(s)\nlen(s)");
    assert.equal(r.result.data['text/plain'], '10');
    assert.equal(outputsOf(r, 'stream')[0].text, 'h\u00e9llo \u4e16\u754c \ud83d\ude00\n');
  });
});
