// helpers.js: shared fixture for the mocha specs: the mode under test (KH_TEST_MODE, default
// "main_thread"), kernel options for it, managers closed after each test, and waiters that
// wait for events (never for time).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const kernelhost = require('../..');

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

/** Marks a promise whose rejection the test awaits later (no unhandled-rejection noise). */
function quiet(promise) {
  promise.catch(() => {});
  return promise;
}

function outputsOf(r, type) {
  return r.outputs.filter((o) => o.type === type).map((o) => o.data);
}

/** Every stream text of a result, in order, as "name:text" pieces joined (C's stream_text). */
// tagged: each run of one stream's text is prefixed with its name once. Where batching splits
// a run into events depends on timing (a 20 ms flush), so runs, not events, are what is tagged.
function streamText(r, tagged = false) {
  let last = null;
  return outputsOf(r, 'stream').map((s) => {
    const tag = tagged && s.name !== last ? `${s.name}:` : '';
    last = s.name;
    return tag + s.text;
  }).join('');
}

/** The core's kernel info object (pid, pooled, sandbox, ...), or null for no such kernel. */
function kernelInfo(m, id) {
  const info = m.getKernelInfo(id);
  return info === undefined ? null : info;
}

/**
 * Records every event of manager `m` from now on (attach it before createKernel to see the
 * creation's events too). waitFor(pred) resolves with the first recorded event, past or future,
 * for which pred({kernelId, type, data}) holds; count(pred) counts them.
 */
function recorder(m) {
  const events = [];
  const waiters = [];
  m.on('kernelEvent', (e) => {
    events.push(e);
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i].pred(e)) waiters.splice(i, 1)[0].resolve(e);
    }
  });
  return {
    events,
    count: (pred) => events.filter(pred).length,
    waitFor(pred) {
      const found = events.find(pred);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    /** Resolves once `n` events satisfy pred. */
    waitCount(pred, n) {
      if (events.filter(pred).length >= n) return Promise.resolve();
      let seen = events.filter(pred).length;
      return new Promise((resolve) => {
        const w = { pred: (e) => pred(e) && ++seen >= n, resolve };
        waiters.push(w);
      });
    },
  };
}

/** A predicate on status events: this state, and (when given) this kernel / execution id. */
function isStatus(state, kernelId, executionId) {
  return (e) => e.type === 'status' && e.data.execution_state === state &&
    (kernelId === undefined || e.kernelId === kernelId) &&
    (executionId === undefined || e.data.executionId === executionId);
}

/** The process id of a worker kernel, asked of Python itself (not counted in its history). */
async function workerPid(k) {
  const r = await k.execute('import os\nos.getpid()', { storeHistory: false });
  assert.equal(r.status, 'ok', JSON.stringify(r.error));
  return Number(r.result.data['text/plain']);
}

/** True while process `pid` exists and has not exited (a zombie has exited). */
function pidAlive(pid) {
  let stat;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'ESRCH') return false;
    throw err;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/**
 * Waits until process `pid` has exited. Linux has no exit notification that Node can wait on
 * for a process it did not spawn (no pidfd, and fs.watch does not work on /proc), so between
 * checks it awaits `tick()`, a real round trip (an execute on some kernel), at most `max` times.
 */
async function waitPidGone(pid, tick, max = 20000) {
  for (let i = 0; i < max; i++) {
    if (!pidAlive(pid)) return;
    await tick();
  }
  assert.fail(`process ${pid} is still alive`);
}

module.exports = {
  kernelhost, MODE, opts, manager, closeAll, kernel, nextEvent, busy, rejects,
  outputsOf, quiet, assert, streamText, kernelInfo, recorder, isStatus, workerPid, pidAlive,
  waitPidGone,
};
