// worker.test.js: worker-only behaviour that needs code (tests/c/test_worker.c through the Node
// binding): interrupts that land in the same process, kill escalation, auto restart, no orphans,
// create/destroy hygiene, limits, env/cwd, restart, the pool and a missing worker. Deaths and
// fd-level output are data: tests/cases/worker.json. These specs choose worker mode themselves,
// whatever KH_TEST_MODE says.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const {
  assert, kernelhost, manager, closeAll, rejects, quiet, nextEvent, streamText,
  kernelInfo, recorder, isStatus, workerPid, pidAlive, waitPidGone,
} = require('./helpers');

const WORKER = kernelhost.KernelMode.WORKER;

function wopts(extra = {}) {
  return { mode: WORKER, ...extra };
}

/** A manager (closed after the test), an event recorder attached before creation, a kernel. */
async function wkernel(extra, managerOptions) {
  const m = manager(managerOptions);
  const rec = recorder(m);
  const id = await m.createKernel(wopts(extra));
  return { m, rec, id, k: m.getKernel(id) };
}

/** A round trip on a main_thread kernel of its own manager: a real event to wait between checks. */
async function ticker() {
  const m = manager();
  const k = m.getKernel(await m.createKernel({ mode: kernelhost.KernelMode.MAIN_THREAD }));
  return async () => {
    const r = await k.execute('0', { storeHistory: false });
    assert.equal(r.status, 'ok');
  };
}

/** The executionId of the next request that goes busy on kernel `id`. */
function nextBusyId(m, id) {
  return nextEvent(m, id, 'status', (d) => d.execution_state === 'busy')
    .then((d) => d.executionId);
}

function countChildren() {
  let n = 0;
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === process.pid) n++;
  }
  return n;
}

function countDir(dir) {
  return fs.readdirSync(dir).length;
}

describe('worker', function () {
  afterEach(closeAll);

  it('worker_interrupt_sleep', async function () {
    const { m, rec, id, k } = await wkernel();
    const pid = await workerPid(k);
    const sleeping = nextEvent(m, id, 'stream');
    const cell = k.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(100)");
    // Inside the cell, on its way into sleep.
    assert.equal((await sleeping).text, 'sleeping\n');
    await k.interrupt();
    const r = await cell;
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
    assert.match(JSON.stringify(r.error.traceback), /sleep/);
    // The same process carries on.
    assert.equal((await k.execute("'still here'")).result.data['text/plain'], "'still here'");
    assert.equal(await workerPid(k), pid);
    assert.equal(rec.count(isStatus('restarting')), 0);
  });

  it('worker_kill_escalation', async function () {
    const { m, rec, id, k } = await wkernel({}, { interruptGraceMs: 300 });
    const tick = await ticker();
    const pid = await workerPid(k);
    const ignoring = nextEvent(m, id, 'stream');
    const cell = quiet(k.execute(
      'import signal, sys\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n' +
      "print('ignoring', flush=True)\nwhile True:\n    pass"));
    // Interrupt once the cell ignores SIGINT.
    const execId = (await ignoring).executionId;
    await k.interrupt();
    await rejects(cell, 'KH_EKERNELDEAD');
    const restarting = await rec.waitFor(isStatus('restarting', id));
    assert.equal(restarting.data.executionId, execId);
    assert.equal(restarting.data.reason.cause, 'interrupt_timeout');
    await rec.waitCount(isStatus('idle', id, ''), 2); // created, restarted
    const r = await k.execute('1 + 1');
    assert.equal(r.result.data['text/plain'], '2');
    assert.equal(r.executionCount, 1);
    assert.notEqual(await workerPid(k), pid);
    await waitPidGone(pid, tick);
  });

  it('worker_auto_restart', async function () {
    const { m, rec, id, k } = await wkernel({ autoRestart: true, env: { KH_AUTO: 'yes' } });
    const pid = await workerPid(k);
    const execId = nextBusyId(m, id);
    await rejects(k.execute('import os\nos._exit(3)'), 'KH_EKERNELDEAD');
    assert.equal(rec.count(isStatus('dead', id, await execId)), 1);
    await rec.waitFor(isStatus('restarting', id));
    await rec.waitCount(isStatus('idle', id, ''), 2);
    assert.equal(rec.count(isStatus('restarting', id)), 1);
    const r = await k.execute("import os\nos.environ['KH_AUTO']");
    assert.equal(r.result.data['text/plain'], "'yes'");
    assert.notEqual(await workerPid(k), pid);
  });

  it('worker_no_orphan_after_host_sigkill', async function () {
    const tick = await ticker();
    // A child host runs a worker kernel, prints the worker's pid, and waits to be killed.
    const child = spawn(process.execPath,
      [path.join(__dirname, 'fixtures', 'worker-host.js')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b) => { err += b; });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal)));
    const pid = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (b) => {
        out += b;
        const mt = /^pid (\d+)\n/m.exec(out);
        if (mt) resolve(Number(mt[1]));
      });
      child.on('exit', (code, sig) => reject(new Error(`host exited ${code} ${sig}: ${err}`)));
    });
    assert.ok(pid > 0 && pid !== child.pid);
    assert.ok(pidAlive(pid));
    assert.ok(child.kill('SIGKILL'));
    assert.equal(await exited, 'SIGKILL');
    // Its worker must exit too.
    await waitPidGone(pid, tick);
  });

  it('worker_create_destroy_cycles', async function () {
    const CYCLES = 200;
    const tick = await ticker(); // its thread, and what its first cell opens, are in the baseline
    await tick();
    const m = manager();
    // One cycle first, so that lazily created state is in the baseline.
    const first = await m.createKernel(wopts());
    await m.destroyKernel(first);
    const fds = countDir('/proc/self/fd');
    const threads = countDir('/proc/self/task');
    const children = countChildren();
    for (let i = 0; i < CYCLES; i++) {
      const id = `cycle-${i}`;
      if (i % 10 === 0) {
        await m.createKernel(wopts({ id }));
        assert.equal((await m.getKernel(id).execute('1 + 1')).result.data['text/plain'], '2');
        await m.destroyKernel(id);
      } else {
        // Destroyed while starting: creation rejects with KH_ECANCELED.
        const created = quiet(m.createKernel(wopts({ id })));
        await m.destroyKernel(id);
        await rejects(created, 'KH_ECANCELED');
      }
    }
    // A worker killed by the last destroys may not be reaped yet (its pipes close when it is):
    // wait for the process table, bounded, then compare.
    for (let i = 0; i < 20000 && countChildren() !== children; i++) await tick();
    assert.equal(countDir('/proc/self/fd'), fds);
    assert.equal(countDir('/proc/self/task'), threads);
    assert.equal(countChildren(), children);
    assert.deepEqual(m.listKernels(), []);
  }).timeout(600000);

  it('worker_max_execution_time', async function () {
    const { m, rec, id, k } = await wkernel({ maxExecutionTime: 200 }, { interruptGraceMs: 300 });
    const pid = await workerPid(k);
    // An interrupt that lands: KeyboardInterrupt, same process.
    const r1 = await k.execute('import time\ntime.sleep(100)');
    assert.equal(r1.status, 'error');
    assert.equal(r1.error.ename, 'KeyboardInterrupt');
    assert.equal(await workerPid(k), pid);
    // One that does not: killed and restarted, with a status saying so.
    const idle = rec.count(isStatus('idle', id));
    const execId = nextBusyId(m, id);
    await rejects(k.execute(
      'import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass'),
    'KH_EKERNELDEAD');
    assert.equal(rec.count(isStatus('restarting', id, await execId)), 1);
    await rec.waitCount(isStatus('idle', id), idle + 1);
    assert.equal((await k.execute("'alive'")).result.data['text/plain'], "'alive'");
    assert.notEqual(await workerPid(k), pid);
  });

  it('worker_inactivity_timeout', async function () {
    const tick = await ticker();
    const { m, rec, id, k } = await wkernel({ inactivityTimeout: 300 });
    const pid = await workerPid(k);
    // Busy for longer than the timeout: never destroyed while busy.
    const r = await k.execute("import time\ntime.sleep(0.6)\n'done'");
    assert.equal(r.result.data['text/plain'], "'done'");
    assert.equal(rec.count(isStatus('dead', id)), 0);
    assert.ok(pidAlive(pid));
    // Then idle: destroyed, and its process is gone (reaped on the loop).
    const dead = await rec.waitFor(isStatus('dead', id));
    assert.equal(dead.data.reason.message, 'inactivityTimeout');
    while (m.listKernels().length > 0) await tick();
    assert.equal(m.getKernel(id), undefined);
    await waitPidGone(pid, tick);
  });

  it('worker_env_and_cwd', async function () {
    const { m, k } = await wkernel({ env: { KH_TEST_VAR: 'v1' }, cwd: '/tmp' });
    const r = await k.execute(
      "import os\nos.system('echo $KH_TEST_VAR')\n(os.environ['KH_TEST_VAR'], os.getcwd())");
    assert.equal(r.result.data['text/plain'], "('v1', '/tmp')");
    assert.equal(streamText(r), 'v1\n');
    // The host's own environment is untouched.
    assert.equal(process.env.KH_TEST_VAR, undefined);
    // A cwd that does not exist fails creation with a clear error.
    await rejects(m.createKernel(wopts({ cwd: '/nonexistent/kh' })), 'KH_EWORKER');
    assert.deepEqual(m.listKernels().map((i) => i.id), [k.id]);
  });

  it('worker_restart_fresh_process', async function () {
    const tick = await ticker();
    const { k } = await wkernel({ env: { KH_TEST_VAR: 'v2' } });
    const pid = await workerPid(k);
    await k.execute('x = 1');
    assert.ok(pidAlive(pid));
    await k.restart();
    assert.notEqual(await workerPid(k), pid);
    const r = await k.execute("import os\n('x' in dir(), os.environ['KH_TEST_VAR'])");
    assert.equal(r.result.data['text/plain'], "(False, 'v2')");
    assert.equal(r.executionCount, 1);
    await waitPidGone(pid, tick);
  });

  it('worker_pool_claim', async function () {
    const m = manager({ pool: { size: 1 } });
    // A pooled worker serves any option set: env and cwd are applied when it is claimed.
    const a = await m.createKernel(wopts({ env: { KH_POOL: 'a' }, cwd: '/tmp' }));
    assert.equal(kernelInfo(m, a).pooled, true);
    const ka = m.getKernel(a);
    let r = await ka.execute("import os\n(os.environ['KH_POOL'], os.getcwd())");
    assert.equal(r.result.data['text/plain'], "('a', '/tmp')");
    // Loader variables need a fresh process.
    const b = await m.createKernel(wopts({ env: { LD_KH_TEST: '1' } }));
    assert.equal(kernelInfo(m, b).pooled, false);
    r = await m.getKernel(b).execute("import os\nos.environ['LD_KH_TEST']");
    assert.equal(r.result.data['text/plain'], "'1'");
    // The pool was refilled after the first claim.
    const c = await m.createKernel(wopts());
    assert.equal(kernelInfo(m, c).pooled, true);
    const kc = m.getKernel(c);
    assert.notEqual(await workerPid(kc), await workerPid(ka));
    r = await kc.execute("import os\nos.environ.get('KH_POOL')");
    assert.equal(r.status, 'ok');
    assert.equal(r.result, undefined); // None: nothing leaked from kernel a
  });

  it('worker_missing_executable', async function () {
    for (const workerPath of ['/nonexistent/kernelhost-worker', '/bin/false']) {
      const m = manager({ workerPath });
      await assert.rejects(m.createKernel(wopts()), (e) => {
        assert.equal(e.code, 'KH_EWORKER');
        // (A missing file is named; /bin/false is only known broken once it has exited.)
        if (workerPath.startsWith('/nonexistent')) assert.ok(e.message.includes(workerPath));
        return true;
      });
      assert.deepEqual(m.listKernels(), []);
    }
    // KH_WORKER_PATH is honoured too.
    const old = process.env.KH_WORKER_PATH;
    process.env.KH_WORKER_PATH = '/nonexistent/kh-worker-env';
    try {
      const m = manager();
      await rejects(m.createKernel(wopts()), 'KH_EWORKER');
      assert.deepEqual(m.listKernels(), []);
    } finally {
      if (old === undefined) delete process.env.KH_WORKER_PATH;
      else process.env.KH_WORKER_PATH = old;
    }
  });
});
