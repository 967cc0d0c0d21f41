// helpers.js: shared fixture for the mocha specs: the mode under test (KH_TEST_MODE, default
// "main_thread"), kernel options for it, managers closed after each test, and waiters that
// wait for events (never for time).
'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const kernelhost = require('../..');

// The addon itself, for the Python executable the core was built against.
function nativeAddon() {
  return require('../../bindings-node/build/Release/kernelhost.node');
}

const MODE = process.env.KH_TEST_MODE || kernelhost.KernelMode.MAIN_THREAD;

/** Kernel options for the mode under test, plus `extra`. */
function opts(extra = {}) {
  return { mode: MODE, ...extra };
}

const open = [];

/** A manager that is closed after the current test. */
function manager(options) {
  const m = new kernelhost.KernelManager(options);
  open.push(m);
  return m;
}

async function closeAll() {
  while (open.length) await open.pop().close();
}

/** A manager and one ready kernel of the mode under test. */
async function kernel(extra, managerOptions) {
  const m = manager(managerOptions);
  const id = await m.createKernel(opts(extra));
  return { m, id, k: m.getKernel(id) };
}

/** Resolves with the first event of `type` on kernel `id` for which pred(data) holds. */
function nextEvent(m, id, type, pred = () => true) {
  return new Promise((resolve) => {
    const fn = (data) => {
      if (!pred(data)) return;
      m.offKernelEvent(id, type, fn);
      resolve(data);
    };
    m.onKernelEvent(id, type, fn);
  });
}

/** Resolves when the kernel reports busy (a cell started running). */
function busy(m, id) {
  return nextEvent(m, id, 'status', (d) => d.execution_state === 'busy');
}

/** Asserts `promise` rejects with an Error whose code is `code` (one of them if an array). */
async function rejects(promise, code) {
  const codes = Array.isArray(code) ? code : [code];
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof Error, `not an Error: ${err}`);
    assert.ok(codes.includes(err.code), `expected ${codes.join('|')}, got ${err.code}: ${err.message}`);
    return true;
  });
}

/** True when the kernels' Python can import `mod` (numpy, matplotlib, IPython). */
function pythonHas(mod) {
  const py = process.env.KH_TEST_PYTHON || nativeAddon().pythonExecutable;
  return spawnSync(py, ['-c', `import ${mod}`], { stdio: 'ignore' }).status === 0;
}

/** Marks a promise whose rejection the test awaits later (no unhandled-rejection noise). */
function quiet(promise) {
  promise.catch(() => {});
  return promise;
}

function outputsOf(r, type) {
  return r.outputs.filter((o) => o.type === type).map((o) => o.data);
}

module.exports = {
  kernelhost, MODE, opts, manager, closeAll, kernel, nextEvent, busy, rejects, pythonHas,
  outputsOf, quiet, assert,
};
