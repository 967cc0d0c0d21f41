// browser.js: the notebook page (examples/notebook) end to end in Debian's Chromium, headless,
// driven by playwright-core (which never downloads a browser). ctest notebook/browser. Every
// step waits for DOM state or a server event, never for time.
// KH_NOTEBOOK_SCREENSHOT=<file.png> also writes the README's screenshot (make notebook-screenshot).
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { startServer } = require('../../examples/notebook/server.js');

const CHROMIUM = process.env.KH_CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 20000; // a generous bound for one DOM state; the whole test takes ~20 s

function step(name) {
  console.log(`notebook/browser: ${name}`);
}

// Types `code` into the page's last cell and runs it with Shift-Enter; returns that cell.
async function runCell(page, code) {
  const id = await page.locator('.cell').last().getAttribute('data-cell-id');
  const cell = page.locator(`.cell[data-cell-id="${id}"]`);
  const ta = cell.locator('textarea');
  await ta.fill(code);
  await ta.press('Shift+Enter');
  return cell;
}

async function main() {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-notebook-test-'));
  // Resolves when the server says kernel `id` was shut down (its tab gone, culled).
  const shutDown = new Map();
  const log = (line) => {
    const m = /^kernel (\S+) shut down$/.exec(line);
    if (m && shutDown.has(m[1])) shutDown.get(m[1])();
  };
  const server = await startServer({ folder, cullMs: 300, log });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // CI runs as root, where Chromium's own sandbox cannot start: --no-sandbox is required there.
    args: ['--no-sandbox'],
  });
  try {
    step('no token: 403');
    const bare = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(bare.status, 403);

    const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
    context.setDefaultTimeout(STEP_MS);
    const page = await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (err) => pageErrors.push(err));
    await page.goto(server.url);
    await page.locator('body[data-ready="true"]').waitFor();
    await page.locator('#kernel-state.idle').waitFor();

    step('a cell that prints (a \\r progress bar overwrites its line)');
    let cell = await runCell(page,
      'for i in range(1, 6):\n    print(f"\\rprogress {i}/5", end="", flush=True)\n' +
      'print()\nprint("hello from kernelhost")\nsecret = 42');
    await cell.locator('.output.stream.stdout', { hasText: 'hello from kernelhost' }).waitFor();
    await cell.locator('.prompt', { hasText: '[1]:' }).waitFor();
    assert.equal(await cell.locator('.output.stream.stdout').innerText(),
      'progress 5/5\nhello from kernelhost\n');

    step('a cell that plots');
    cell = await runCell(page,
      'import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(5, 2.4))\n' +
      'ax.plot([1, 3, 2, 4], marker="o")\nax.set_title("kernelhost")\nplt.show()');
    await cell.locator('.output.display_data img[src^="data:image/png;base64,"]').waitFor();

    step('a cell that shows a DataFrame');
    cell = await runCell(page,
      'import pandas as pd\npd.DataFrame({"kernel": ["worker", "main_thread"], "ms": [1.6, 0.1]})');
    await cell.locator('.output.execute_result table th', { hasText: 'kernel' }).waitFor();
    assert.equal(await cell.locator('.output.execute_result tbody tr').count(), 2);

    step('a cell that raises');
    cell = await runCell(page, 'def f(x):\n    return 1 / x\nf(0)');
    const err = cell.locator('.output.error[data-ename="ZeroDivisionError"]');
    await err.waitFor();
    const tb = await err.innerText();
    assert.match(tb, /ZeroDivisionError/);
    assert.match(tb, /return 1 \/ x/);
    assert.ok(!tb.includes('\x1b'), 'ANSI escapes are rendered, not shown');

    if (process.env.KH_NOTEBOOK_SCREENSHOT) {
      // The first four cells: a print, a plot, a table, a traceback.
      const box = await err.boundingBox();
      await page.screenshot({ path: process.env.KH_NOTEBOOK_SCREENSHOT, fullPage: true,
        clip: { x: 0, y: 0, width: 1000, height: box.y + box.height + 12 } });
      step(`screenshot written to ${process.env.KH_NOTEBOOK_SCREENSHOT}`);
    }

    step('untrusted HTML is sanitised');
    cell = await runCell(page,
      'class Evil:\n    def _repr_html_(self):\n' +
      '        return \'<b class="evil-ok">shown</b><img src="x" onerror="window.pwned=1">' +
      '<script>window.pwned=2</script>\'\nEvil()');
    await cell.locator('b.evil-ok').waitFor();
    assert.equal(await cell.locator('script').count(), 0);
    assert.equal(await cell.locator('img').getAttribute('onerror'), null);
    assert.equal(await page.evaluate(() => window.pwned), undefined);

    step('display updates, clear_output, Markdown and LaTeX');
    cell = await runCell(page, 'h = display("first", display_id=True)');
    const shown = cell.locator('.output.display_data');
    await shown.filter({ hasText: 'first' }).waitFor();
    const md = await runCell(page,
      'from IPython.display import clear_output, Markdown, Latex\nh.update("second")\n' +
      'print("gone"); clear_output(wait=True); print("kept")\n' +
      'display(Markdown("**bold** text"), Latex(r"$\\frac{a}{b}$"))');
    await shown.filter({ hasText: 'second' }).waitFor();
    await md.locator('.markdown-rendered strong', { hasText: 'bold' }).waitFor();
    await md.locator('.katex').waitFor();
    await md.locator('.output.stream', { hasText: 'kept' }).waitFor();
    assert.equal(await md.locator('.output.stream', { hasText: 'gone' }).count(), 0);

    step('a cell that sleeps, interrupted');
    cell = await runCell(page, 'import time\ntime.sleep(120)');
    await cell.locator('.prompt', { hasText: '[*]:' }).waitFor();
    await page.locator('#kernel-state.busy').waitFor();
    await page.click('#interrupt');
    await cell.locator('.output.error[data-ename="KeyboardInterrupt"]').waitFor();
    await page.locator('#kernel-state.idle').waitFor();

    step('a cell that asks for input()');
    cell = await runCell(page, 'name = input("Your name: ")\nprint("hi", name)');
    const box = cell.locator('.input-request input');
    await box.waitFor();
    assert.equal(await cell.locator('.input-request').innerText(), 'Your name:');
    await box.fill('Ada');
    await box.press('Enter');
    await cell.locator('.output.stream.stdout', { hasText: 'hi Ada' }).waitFor();

    step('completion on Tab');
    cell = page.locator('.cell').last();
    await cell.locator('textarea').fill('import os\nos.pa');
    await cell.locator('textarea').press('End');
    await cell.locator('textarea').press('Tab');
    await cell.locator('.completions li', { hasText: /^path$/ }).waitFor();
    await cell.locator('textarea').press('Escape');
    await cell.locator('textarea').fill('sec');
    await cell.locator('textarea').press('Tab');
    await page.waitForFunction(
      () => document.querySelector('.cell:last-child textarea').value === 'secret');
    await cell.locator('textarea').fill('');

    step('a second tab: its own kernel, picked main_thread');
    const tab = await context.newPage();
    tab.on('pageerror', (e) => pageErrors.push(e));
    await tab.goto(server.url);
    await tab.locator('body[data-ready="true"]').waitFor();
    assert.equal(server.kernels.size, 2);
    const first = [...server.kernels.keys()][1];
    const gone = new Promise((resolve) => shutDown.set(first, resolve));
    await tab.selectOption('#preset', 'main_thread');
    await gone; // the tab's worker kernel, replaced by the main_thread one
    await tab.locator('#message', { hasText: 'kernel main_thread started' }).waitFor();
    cell = await runCell(tab, 'print("secret" in dir(), __import__("os").getpid())');
    await cell.locator('.output.stream', { hasText: `False ${process.pid}` }).waitFor();
    step('a closed tab\'s kernel is culled');
    const tabKernel = [...server.kernels.keys()][1];
    const culled = new Promise((resolve) => shutDown.set(tabKernel, resolve));
    await tab.close();
    await culled;
    assert.equal(server.kernels.size, 1);

    step('save, validate with nbformat, reopen');
    await page.fill('#path', 'saved.ipynb');
    await page.click('#save');
    await page.locator('body[data-saved="saved.ipynb"]').waitFor();
    const file = path.join(folder, 'saved.ipynb');
    execFileSync('/usr/bin/python3', ['-c',
      'import sys, nbformat\nnb = nbformat.read(sys.argv[1], as_version=4)\nnbformat.validate(nb)',
      file], { stdio: 'inherit' });
    const nb = JSON.parse(fs.readFileSync(file, 'utf8'));
    const outputs = nb.cells.flatMap((c) => c.outputs || []);
    assert.ok(outputs.some((o) => o.output_type === 'display_data' && o.data['image/png']));
    assert.ok(outputs.some((o) => o.output_type === 'execute_result' && o.data['text/html']));
    assert.ok(outputs.some((o) => o.output_type === 'error' && o.ename === 'ZeroDivisionError'));
    assert.equal(nb.cells[0].execution_count, 1);

    step('restart: the namespace is gone');
    await page.click('#restart');
    await page.locator('#message', { hasText: 'kernel restarted' }).waitFor();
    cell = await runCell(page, 'secret');
    await cell.locator('.output.error[data-ename="NameError"]').waitFor();

    // A notebook as Jupyter writes it (nbformat 4.4, no cell ids, sources as lists of lines).
    execFileSync('/usr/bin/python3', ['-c', [
      'import sys, nbformat',
      'from nbformat.v4 import new_notebook, new_markdown_cell, new_code_cell, new_output',
      'nb = new_notebook(cells=[new_markdown_cell("# From *Jupyter*\\nline two"),',
      '  new_code_cell("1 + 2", execution_count=7, metadata={"tags": ["kept"]}, outputs=[',
      '    new_output("stream", name="stdout", text="from jupyter\\n"),',
      '    new_output("execute_result", {"text/plain": "3"}, execution_count=7)])])',
      'nb.nbformat_minor = 4',
      'for c in nb.cells: c.pop("id", None)',
      'nbformat.write(nb, sys.argv[1])'].join('\n'), path.join(folder, 'jupyter.ipynb')],
    { stdio: 'inherit' });

    step('reload: the tab takes its kernel back and reopens the file');
    const before = [...server.kernels.keys()];
    await page.reload();
    await page.locator('body[data-ready="true"]').waitFor();
    assert.deepEqual([...server.kernels.keys()], before);
    await page.selectOption('#files', 'saved.ipynb');
    await page.click('#open');
    await page.locator('body[data-opened="saved.ipynb"]').waitFor();
    assert.equal(await page.locator('.cell').count(), nb.cells.length);
    await page.locator('.output img[src^="data:image/png;base64,"]').first().waitFor();
    await page.locator('.output.execute_result table').first().waitFor();
    await page.locator('.output.error[data-ename="ZeroDivisionError"]').waitFor();
    await page.locator('.cell .prompt', { hasText: '[1]:' }).first().waitFor();

    step('a notebook written by nbformat opens, and saves back valid with its metadata');
    await page.selectOption('#files', 'jupyter.ipynb');
    await page.click('#open');
    await page.locator('body[data-opened="jupyter.ipynb"]').waitFor();
    await page.locator('.cell.markdown h1', { hasText: 'From Jupyter' }).waitFor();
    await page.locator('.cell .prompt', { hasText: '[7]:' }).waitFor();
    await page.locator('.output.stream', { hasText: 'from jupyter' }).waitFor();
    await page.fill('#path', 'jupyter-again.ipynb');
    await page.click('#save');
    await page.locator('body[data-saved="jupyter-again.ipynb"]').waitFor();
    const again = path.join(folder, 'jupyter-again.ipynb');
    execFileSync('/usr/bin/python3', ['-c',
      'import sys, nbformat\nnb = nbformat.read(sys.argv[1], as_version=4)\n' +
      'nbformat.validate(nb)\n' +
      'assert nb.cells[1].metadata.tags == ["kept"], nb.cells[1].metadata\n' +
      'assert nb.cells[1].outputs[1].data["text/plain"] == "3"', again], { stdio: 'inherit' });

    step('run all: the opened notebook runs again in this tab\'s kernel');
    await page.click('#run-all');
    const code = page.locator('.cell.code').first();
    // [1] was 'secret', the first cell since the restart.
    await code.locator('.prompt', { hasText: '[2]:' }).waitFor();
    await code.locator('.output.execute_result', { hasText: '3' }).waitFor();
    assert.equal(await code.locator('.output.stream').count(), 0);

    assert.deepEqual(pageErrors.map(String), []);
    step('ok');
  } finally {
    await browser.close();
    await server.close();
    fs.rmSync(folder, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
