// display.test.js: rich output: MIME bundles, display ids, clear_output, IPython, matplotlib.
'use strict';

const { assert, kernel, closeAll, outputsOf, pythonHas } = require('./helpers');

describe('display', function () {
  afterEach(closeAll);

  it('display_data_mime', async function () {
    const { m, id, k } = await kernel();
    const seen = [];
    m.onKernelEvent(id, 'display_data', (d) => seen.push(d));
    const r = await k.execute([
      'class Rich:',
      "    def _repr_html_(self): return '<b>rich</b>'",
      "    def _repr_markdown_(self): return '**rich**'",
      "    def _repr_png_(self): return b'\\x89PNG\\r\\n\\x1a\\nfake'",
      "    def __repr__(self): return 'Rich()'",
      'display(Rich())',
      'Rich()',
    ].join('\n'));
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    assert.equal(seen.length, 1);
    const bundle = seen[0].data;
    assert.equal(bundle['text/html'], '<b>rich</b>');
    assert.equal(bundle['text/markdown'], '**rich**');
    assert.equal(bundle['text/plain'], 'Rich()');
    assert.equal(typeof bundle['image/png'], 'string');
    assert.equal(Buffer.from(bundle['image/png'], 'base64').subarray(0, 4).toString('latin1'),
      '\x89PNG');
    assert.equal(r.result.data['text/html'], '<b>rich</b>');
    assert.equal(seen[0].kernelId, id);
  });

  it('display_update_and_clear', async function () {
    const { k } = await kernel();
    const r = await k.execute(
      "display('a', display_id='d1')\nupdate_display('b', display_id='d1')\n" +
      "display('c', display_id='d1', update=True)\nclear_output(wait=True)\nclear_output()");
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    const types = r.outputs.filter((o) => o.type !== 'status').map((o) => o.type);
    assert.deepEqual(types, ['display_data', 'update_display_data', 'update_display_data',
      'clear_output', 'clear_output']);
    const [first, upd1, upd2] = outputsOf(r, 'display_data').concat(
      outputsOf(r, 'update_display_data'));
    assert.equal(first.transient.display_id, 'd1');
    assert.equal(upd1.data['text/plain'], "'b'");
    assert.equal(upd2.data['text/plain'], "'c'");
    assert.equal(upd2.transient.display_id, 'd1');
    assert.deepEqual(outputsOf(r, 'clear_output').map((c) => c.wait), [true, false]);
  });

  it('display_formatter_error_contained', async function () {
    const { k } = await kernel();
    const r = await k.execute([
      'class Bad:',
      "    def _repr_html_(self): raise ValueError('formatter boom')",
      "    def __repr__(self): return 'Bad()'",
      'display(Bad())',
      'Bad()',
    ].join('\n'));
    assert.equal(r.status, 'ok');
    assert.equal(outputsOf(r, 'display_data')[0].data['text/plain'], 'Bad()');
    assert.equal(r.result.data['text/plain'], 'Bad()');
    assert.equal(r.result.data['text/html'], undefined);
    assert.equal((await k.execute('1 + 1')).result.data['text/plain'], '2');
  });

  it('display_ipython', async function () {
    if (!pythonHas('IPython')) this.skip();
    const { k } = await kernel();
    const r = await k.execute(
      "from IPython.display import display, HTML, Markdown\ndisplay(HTML('<i>x</i>'))\n" +
      "display(Markdown('*y*'))");
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    const shown = outputsOf(r, 'display_data');
    assert.equal(shown.length, 2);
    assert.equal(shown[0].data['text/html'], '<i>x</i>');
    assert.equal(shown[1].data['text/markdown'], '*y*');
  });

  it('matplotlib_png', async function () {
    if (!pythonHas('matplotlib')) this.skip();
    const { k } = await kernel();
    const r = await k.execute(
      'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n' +
      'fig = plt.figure()\nplt.plot([3, 2, 1])');
    assert.equal(r.status, 'ok', JSON.stringify(r.error));
    const pngs = outputsOf(r, 'display_data').filter((d) => d.data['image/png']);
    assert.equal(pngs.length, 2);
    for (const d of pngs) {
      const bytes = Buffer.from(d.data['image/png'], 'base64');
      assert.equal(bytes.subarray(1, 4).toString('latin1'), 'PNG');
      assert.ok(typeof d.data['text/plain'] === 'string');
    }
  });
});
