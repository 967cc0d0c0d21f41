// run_kernelhost.js: compare.py's kernelhost side. Runs the cells of one job in one kernelhost
// kernel (through the Node binding, as an app would) and writes what each cell produced.
//
//   node run_kernelhost.js JOB.json OUT.json
//
// JOB: {"mode": "main_thread"|"worker", "cwd": DIR, "timeout_ms": N, "cells": [SOURCE, ...]}
// OUT: {"kernel": {...}, "cells": [{"status", "outputs": [{type, data}], "error", "ms"}, ...]}
//
// Each cell is awaited before the next is sent, so a failed cell never aborts the ones after it
// (a notebook run cell by cell behaves that way too). A kernel that dies is recreated for the
// cells after it (its state is lost, as in Jupyter after a restart) and the cell says "dead".
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const kernelhost = require(path.join(__dirname, '..', '..'));

async function main() {
  const [jobFile, outFile] = process.argv.slice(2);
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8'));
  // main_thread kernels share this process's interpreter, whose working directory is the
  // process's own (the cwd option is worker-only), so the notebook's directory is entered here.
  process.chdir(job.cwd);
  const m = new kernelhost.KernelManager();
  // Outputs are compared with ipykernel's Jupyter messages, which carry images as base64.
  const kernelOptions = { mode: job.mode, binary: 'base64' };
  if (job.mode === 'worker') kernelOptions.cwd = job.cwd;
  const out = { kernel: { mode: job.mode }, cells: [] };
  // No one types at a notebook run: input() raises StdinNotImplementedError, as in ipykernel,
  // which compare.py runs with allow_stdin=False too.
  const create = () => m.createKernel(kernelOptions);
  let id = await create();
  for (const code of job.cells) {
    const t0 = process.hrtime.bigint();
    const cell = { status: null, outputs: [], error: null, ms: 0 };
    try {
      const r = await m.getKernel(id).execute(code, { timeout: job.timeout_ms, allowStdin: false });
      cell.status = r.status;
      cell.outputs = r.outputs.filter((o) => o.type !== 'status');
      if (r.error) cell.error = r.error;
    } catch (err) {
      cell.status = 'failed';
      cell.error = { ename: err.code || 'Error', evalue: String(err.message), traceback: [] };
      if (err.code === 'KH_EKERNELDEAD') {
        cell.status = 'dead';
        await m.destroyKernel(id).catch(() => {});
        id = await create();
      }
    }
    cell.ms = Number(process.hrtime.bigint() - t0) / 1e6;
    out.cells.push(cell);
  }
  await m.close();
  fs.writeFileSync(outFile, JSON.stringify(out));
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`run_kernelhost: ${err.stack || err}\n`);
  process.exit(2);
});
