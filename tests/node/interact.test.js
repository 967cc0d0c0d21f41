// interact.test.js: what a case file cannot hold about editor requests: an interrupt made while
// one is in flight and no cell runs, and historyFile (a path of the test's own). The rest is
// data: tests/cases/interact.json. Names match tests/c (and tests/lua for history_file_output).
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { assert, kernel, manager, opts, closeAll, rejects } = require('./helpers');

describe('interact', function () {
  afterEach(closeAll);

  it('interact_interrupt_idle', async function () {
    const { k } = await kernel();
    await k.execute('class Slow:\n    def __dir__(self):\n        while True:\n            pass\nslow = Slow()');
    const p = k.complete('slow.', undefined, { timeout: 60000 });
    await k.interrupt(); // no cell runs: the completion is what the interrupt stops
    await rejects(p, 'KH_ECANCELED');
    // Its work stopped too: the next request is served at once, not after 60 s.
    assert.equal((await k.isComplete('x = 1')).status, 'complete');
  });

  it('history_file_output', async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-history-'));
    const file = path.join(dir, 'history.jsonl');
    try {
      const m = manager();
      const first = m.getKernel(await m.createKernel(opts({ historyFile: file })));
      await first.execute('x = 20');
      await first.execute('x * 2 + 2');
      await m.destroyKernel(first.id);
      const k = m.getKernel(await m.createKernel(opts({ historyFile: file })));
      await k.execute("'next'");
      const h = await k.history({ histAccessType: 'tail', n: 10, output: true });
      assert.deepEqual(h.history, [[1, 1, ['x = 20', null]], [1, 2, ['x * 2 + 2', '42']],
        [2, 1, ["'next'", "'next'"]]]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
