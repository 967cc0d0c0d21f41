// fork.test.js: the fork server from Node (tests/c/test_fork.c): manager option pool.mode
// "fork", manager.poolReady(), kernels forked from the template (getKernelInfo origin "fork"),
// a preload that fails, a template that dies, and a manager with no pool. Worker mode always,
// whatever KH_TEST_MODE says; what only the core's processes do is C's (tests/layer_names.txt).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { assert, kernelhost, manager, closeAll, rejects, nextEvent, kernelInfo } =
  require('./helpers');

const WORKER = { mode: kernelhost.KernelMode.WORKER };

/** The parent pid and the process group of `pid`, from /proc. */
function ppidPgrp(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(fields[1]), pgrp: Number(fields[2]) };
}

function kpid(m, id) {
  const pid = kernelInfo(m, id).pid;
  assert.ok(Number.isInteger(pid) && pid > 0, `no pid: ${pid}`);
  return pid;
}

/** The pool's info once it is ready. */
async function poolReadyOk(m) {
  const info = await m.poolReady();
  assert.equal(info.state, 'ready');
  return info;
}

/** The text/plain result of a cell. */
async function evaluate(m, id, code) {
  const r = await m.getKernel(id).execute(code);
  assert.ok(r.result && r.result.data['text/plain'] !== undefined,
    `no result for ${code}: ${JSON.stringify(r.error)}`);
  return r.result.data['text/plain'];
}

describe('fork', function () {
  afterEach(closeAll);

  it('fork_kernel_from_template', async function () {
    const m = manager({ pool: { mode: 'fork', preload: ['json', 'email.mime.text'] } });
    const info = await poolReadyOk(m);
    const tpid = info.pid;
    assert.ok(Number.isInteger(tpid) && tpid > 0);
    assert.equal(info.mode, 'fork');
    assert.deepEqual(info.preload, ['json', 'email.mime.text']);
    const a = await m.createKernel(WORKER);
    const b = await m.createKernel(WORKER);
    assert.equal(kernelInfo(m, a).origin, 'fork');
    assert.equal(kernelInfo(m, b).origin, 'fork');
    // The host's children (CLONE_PARENT), not the template's; each in its own process group.
    const pa = kpid(m, a);
    assert.equal(ppidPgrp(pa).ppid, process.pid);
    assert.equal(ppidPgrp(pa).pgrp, pa);
    assert.ok(pa !== kpid(m, b) && pa !== tpid);
    // The preload is imported already; the kernels are separate processes.
    assert.equal(await evaluate(m, a, "import sys\n'email.mime.text' in sys.modules"), 'True');
    assert.equal(await evaluate(m, a, 'x = 41\nx + 1'), '42');
    assert.equal(await evaluate(m, b, "'x' in globals()"), 'False');
    assert.equal(await evaluate(m, b, 'import os\nos.getpid() != os.getppid()'), 'True');
    const sleeping = nextEvent(m, a, 'stream', (d) => d.text.includes('sleeping'));
    const slept = m.getKernel(a)
      .execute("import time\nprint('sleeping', flush=True)\ntime.sleep(100)");
    await sleeping;
    await m.getKernel(a).interrupt();
    assert.equal((await slept).error.ename, 'KeyboardInterrupt');
    assert.equal(await evaluate(m, a, 'x'), '41');
  });

  it('fork_restart_from_template', async function () {
    const m = manager({ pool: { mode: 'fork', size: 0 } });
    await poolReadyOk(m);
    const a = await m.createKernel(WORKER);
    assert.equal(kernelInfo(m, a).origin, 'fork');
    const before = kpid(m, a);
    assert.equal(await evaluate(m, a, 'y = 1\ny'), '1');
    await m.getKernel(a).restart();
    assert.equal(kernelInfo(m, a).origin, 'fork');
    const after = kpid(m, a);
    assert.notEqual(after, before);
    assert.equal(ppidPgrp(after).ppid, process.pid);
    assert.equal(await evaluate(m, a, "'y' in globals()"), 'False');
  });

  it('fork_preload_error_names_module', async function () {
    const m = manager({ pool: { mode: 'fork', preload: ['json', 'kh_no_such_module'] } });
    const ready = m.poolReady();
    await rejects(ready, 'KH_EOPTION');
    await ready.catch((err) => assert.match(err.message, /kh_no_such_module/));
    // Kernels on this manager fail with the same error, at creation.
    const made = m.createKernel(WORKER);
    await rejects(made, 'KH_EOPTION');
    await made.catch((err) => assert.match(err.message, /kh_no_such_module/));
  });

  it('fork_template_death_restarts', async function () {
    const m = manager({ pool: { mode: 'fork', size: 0 } });
    const tpid = (await poolReadyOk(m)).pid;
    const a = await m.createKernel(WORKER);
    assert.equal(kernelInfo(m, a).origin, 'fork');
    process.kill(tpid, 'SIGKILL');
    // The kernel made by the dead template lives on (it is the host's child).
    assert.equal(await evaluate(m, a, '1 + 1'), '2');
    // Meanwhile kernels start cold or from the restarted template; then it is back.
    const b = await m.createKernel(WORKER);
    assert.equal(await evaluate(m, b, '2 + 2'), '4');
    const info = await m.poolReady();
    assert.equal(info.state, 'ready');
    assert.ok(info.restarts >= 1, `restarts ${info.restarts}`);
    assert.match(info.lastExit, /SIGKILL/);
    assert.notEqual(info.pid, tpid);
    const c = await m.createKernel(WORKER);
    assert.equal(kernelInfo(m, c).origin, 'fork');
    assert.equal(await evaluate(m, c, '3 + 3'), '6');
  });

  it('fork_pool_ready_no_pool', async function () {
    for (const options of [undefined, { pool: { size: 0 } }]) {
      const m = manager(options);
      const ready = m.poolReady();
      await rejects(ready, 'KH_ENOTSUP');
      await ready.catch((err) => assert.match(err.message, /pool/));
      // The manager works on: its kernels start cold.
      const a = await m.createKernel(WORKER);
      assert.equal(kernelInfo(m, a).origin, 'cold');
      assert.equal(await evaluate(m, a, '1 + 1'), '2');
    }
  });

  // A Node process with nothing else to do: the wait alone keeps it alive until the template
  // is up (the process would otherwise end with the promise pending and print nothing).
  it('fork_pool_ready_holds_loop', async function () {
    const script = `
      const { KernelManager } = require(${JSON.stringify(path.join(__dirname, '..', '..'))});
      const m = new KernelManager({ pool: { mode: 'fork', size: 0 } });
      m.poolReady().then((info) => {
        process.stdout.write('state: ' + info.state);
        return m.close();
      });`;
    const { code, stdout, stderr } = await new Promise((resolve) => {
      execFile(process.execPath, ['-e', script], { env: process.env }, (err, out, errOut) =>
        resolve({ code: err ? err.code : 0, stdout: out, stderr: errOut }));
    });
    assert.equal(stdout, 'state: ready', `child: ${code}: ${stderr}`);
    assert.equal(code, 0, stderr);
  });

  it('fork_pools_coexist', async function () {
    // A fork server and a warm pool in one host process, one per manager.
    const mf = manager({ pool: { mode: 'fork', size: 1 } });
    const mw = manager({ pool: { size: 1 } });
    await poolReadyOk(mf);
    assert.equal((await mw.poolReady()).mode, 'spawn');
    const a = await mf.createKernel(WORKER);
    const b = await mw.createKernel(WORKER);
    assert.equal(kernelInfo(mf, a).origin, 'fork');
    assert.equal(kernelInfo(mw, b).origin, 'warm');
    assert.equal(await evaluate(mf, a, 'x = 20\nx + 1'), '21');
    assert.equal(await evaluate(mw, b, 'x = 30\nx + 1'), '31');
  });

  it('fork_close_while_forking', async function () {
    // The template is still starting: the kernel and the pool's answer are on their way when
    // the manager closes; both promises reject with KH_ECANCELED.
    const m = new kernelhost.KernelManager({ pool: { mode: 'fork', size: 2 } });
    const [created, ready, closed] =
      await Promise.allSettled([m.createKernel(WORKER), m.poolReady(), m.close()]);
    assert.equal(created.status, 'rejected');
    assert.equal(created.reason.code, 'KH_ECANCELED');
    assert.equal(ready.status, 'rejected');
    assert.equal(ready.reason.code, 'KH_ECANCELED');
    assert.equal(closed.status, 'fulfilled');
  });
});
