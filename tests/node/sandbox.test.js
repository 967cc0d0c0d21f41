// sandbox.test.js: the worker sandbox end to end through the Node binding (tests/c/test_sandbox.c):
// createKernel with permissions / filesystem / limits / sandbox, then real attempts to break each
// grant from inside the kernel, through Python and through ctypes calling libc directly. Worker
// mode always, whatever KH_TEST_MODE says. Options refused before any worker starts are data:
// tests/cases/options.json.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const {
  assert, kernelhost, manager, closeAll, nextEvent, outputsOf, streamText, kernelInfo,
} = require('./helpers');

const WORKER = kernelhost.KernelMode.WORKER;

function sopts(extra = {}) {
  return { mode: WORKER, ...extra };
}

/**
 * A scratch tree: secret.txt, r/data.txt (readable), w/ (writable), root/ (a filesystem root
 * holding hello.txt); mnt/ws is where the sandbox mounts root.
 */
function makeTree() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-sbx-'));
  const t = {
    dir,
    secret: path.join(dir, 'secret.txt'),
    r: path.join(dir, 'r'),
    w: path.join(dir, 'w'),
    root: path.join(dir, 'root'),
    mp: path.join(dir, 'mnt', 'ws'),
  };
  fs.writeFileSync(t.secret, 'TOP-SECRET');
  for (const d of [t.r, t.w, t.root]) fs.mkdirSync(d);
  fs.writeFileSync(path.join(t.r, 'data.txt'), 'readable');
  fs.writeFileSync(path.join(t.root, 'hello.txt'), 'hello from root');
  return t;
}

const trees = [];
function tree() {
  const t = makeTree();
  trees.push(t);
  return t;
}

async function kernelOf(m, extra) {
  return m.getKernel(await m.createKernel(sopts(extra)));
}

/** Runs code that must succeed; returns the result. */
async function execOk(k, code) {
  const r = await k.execute(code);
  assert.equal(r.status, 'ok', `cell failed: ${JSON.stringify(r.error)}\n--- code:\n${code}`);
  return r;
}

/** Runs code that must end in exception `ename`, reported as an execute_error event too. */
async function execError(m, k, code, ename) {
  const ev = nextEvent(m, k.id, 'execute_error');
  const r = await k.execute(code);
  assert.equal(r.status, 'error', `expected ${ename}, got status ${r.status}\n--- code:\n${code}`);
  assert.equal(r.error.ename, ename, JSON.stringify(r.error));
  const e = await ev;
  assert.equal(e.ename, ename);
  assert.equal(e.executionId, r.outputs[0].data.executionId);
  return r;
}

function countChar(s, c) {
  return s.split(c).length - 1;
}

// Python's open (audit hook: PermissionError naming the grant), and libc's open through ctypes,
// which only the OS layer (Landlock) can stop.
const READ_ATTACK =
  'import ctypes, errno\n' +
  'libc = ctypes.CDLL(None, use_errno=True)\n' +
  "assert open(R + '/data.txt').read() == 'readable'\n" +
  'fd = libc.open(SECRET.encode(), 0)\n' +
  'assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), (fd, ' +
  'ctypes.get_errno())\n' +
  'open(SECRET).read()\n';

function readDeniedIn(m, k, t) {
  return execError(m, k, `R = '${t.r}'\nSECRET = '${t.secret}'\n${READ_ATTACK}`,
    'PermissionError');
}

/** A loopback TCP listener on an ephemeral port (the kernel's connects queue in its backlog). */
async function listener() {
  const server = net.createServer((sock) => sock.destroy());
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return server;
}

describe('sandbox', function () {
  const servers = [];
  afterEach(async function () {
    await closeAll();
    while (servers.length) await new Promise((resolve) => servers.pop().close(resolve));
    while (trees.length) fs.rmSync(trees.pop().dir, { recursive: true, force: true });
  });

  it('sandbox_read_denied', async function () {
    const t = tree();
    const m = manager();
    const k = await kernelOf(m, { permissions: { read: [t.r] } });
    await readDeniedIn(m, k, t);
    // The kernel's info names the mode and the layers in force (camelCase, as every API shape
    // of the Node module: the facade converts the core's snake_case).
    const info = kernelInfo(m, k.id);
    assert.equal(info.sandbox.mode, 'strict');
    assert.equal(info.sandbox.layers.landlock, true);
    assert.equal(info.sandbox.layers.noNewPrivs, true);
    assert.deepEqual(info.sandbox.missing, []);
    assert.ok(info.sandbox.runtimeRead.length > 0);
  });

  it('sandbox_write_denied', async function () {
    const t = tree();
    const m = manager();
    const k = await kernelOf(m, { permissions: { read: [t.dir], write: [t.w] } });
    // Allowed: a write inside the grant lands on the host.
    await execOk(k, `open('${t.w}/ok.txt', 'w').write('written')`);
    assert.equal(fs.readFileSync(path.join(t.w, 'ok.txt'), 'utf8'), 'written');
    // Denied: readable but not writable (the secret), a new file beside it, via libc too.
    await execError(m, k,
      'import ctypes, errno, os\n' +
      'libc = ctypes.CDLL(None, use_errno=True)\n' +
      `assert open('${t.secret}').read() == 'TOP-SECRET'\n` +
      `fd = libc.open(b'${t.dir}/new.txt', os.O_WRONLY | os.O_CREAT, 0o644)\n` +
      'assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n' +
      `fd = libc.open(b'${t.secret}', os.O_WRONLY | os.O_TRUNC)\n` +
      'assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n' +
      `open('${t.dir}/new.txt', 'w')\n`,
      'PermissionError');
    assert.equal(fs.existsSync(path.join(t.dir, 'new.txt')), false);
    assert.equal(fs.readFileSync(t.secret, 'utf8'), 'TOP-SECRET');
  });

  it('sandbox_mount_visible', async function () {
    const t = tree();
    const m = manager();
    const k = await kernelOf(m,
      { filesystem: { root: t.root, mountPoint: t.mp }, permissions: {} });
    // The kernel starts at the mount point, sees root's files there, and writes land in root.
    const r = await execOk(k,
      'import os\n' +
      `assert os.getcwd() == '${t.mp}', os.getcwd()\n` +
      "assert open('hello.txt').read() == 'hello from root'\n" +
      "open('made-inside.txt', 'w').write('from the kernel')\n" +
      "os.mkdir('sub')\n" +
      "sorted(os.listdir('.'))");
    assert.equal(r.result.data['text/plain'], "['hello.txt', 'made-inside.txt', 'sub']");
    assert.equal(fs.readFileSync(path.join(t.root, 'made-inside.txt'), 'utf8'), 'from the kernel');
    // The mount is the worker's own: the host's mount point has no hello.txt.
    assert.equal(fs.existsSync(path.join(t.mp, 'hello.txt')), false);
    // Nothing outside the mount: the host tree around it, and /etc.
    await execError(m, k, `open('${t.secret}').read()`, 'PermissionError');
    await execError(m, k,
      'import ctypes, errno\n' +
      'libc = ctypes.CDLL(None, use_errno=True)\n' +
      "fd = libc.open(b'/etc/passwd', 0)\n" +
      'assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n' +
      "open('../../root/hello.txt').read()\n",
      'PermissionError');
  });

  it('sandbox_net_denied', async function () {
    const a = await listener();
    const b = await listener();
    servers.push(a, b);
    const pa = a.address().port;
    const pb = b.address().port;
    const m = manager();
    const k = await kernelOf(m, { permissions: { net: [`127.0.0.1:${pa}`] } });
    // Allowed: the listed port, and the connection really reaches the listener.
    const accepted = new Promise((resolve) => a.once('connection', resolve));
    await execOk(k,
      `import socket\ns = socket.create_connection(('127.0.0.1', ${pa}))\ns.close()`);
    await accepted;
    // Denied: another port on the same host, by libc's connect (Landlock) and by Python.
    let reachedB = false;
    b.on('connection', () => { reachedB = true; });
    await execError(m, k,
      'import ctypes, errno, socket, struct\n' +
      'libc = ctypes.CDLL(None, use_errno=True)\n' +
      's = socket.socket()\n' +
      `addr = struct.pack('=H', socket.AF_INET) + struct.pack('!H', ${pb}) + ` +
      "socket.inet_aton('127.0.0.1') + bytes(8)\n" +
      'rc = libc.connect(s.fileno(), addr, len(addr))\n' +
      'assert rc == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), (rc, ' +
      'ctypes.get_errno())\n' +
      's.close()\n' +
      `socket.create_connection(('127.0.0.1', ${pb}))\n`,
      'PermissionError');
    // Unix sockets reach whatever listens at a path: refused unless net is true (seccomp).
    await execError(m, k,
      'import ctypes, errno, socket\n' +
      'libc = ctypes.CDLL(None, use_errno=True)\n' +
      'fd = libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)\n' +
      'assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n' +
      "socket.socket(socket.AF_UNIX).connect('/run/whatever.sock')\n",
      'PermissionError');
    assert.equal(reachedB, false);
  });

  it('sandbox_run_denied', async function () {
    const m = manager();
    const k = await kernelOf(m, { permissions: { run: false } });
    // libc's execve (seccomp: EPERM), then Python's subprocess, os.system and os.exec*.
    await execError(m, k,
      'import ctypes, errno, os\n' +
      'libc = ctypes.CDLL(None, use_errno=True)\n' +
      "argv = (ctypes.c_char_p * 2)(b'/bin/true', None)\n" +
      "rc = libc.execve(b'/bin/true', argv, None)\n" +
      'assert rc == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES), rc\n' +
      'import subprocess\n' +
      "subprocess.run(['/bin/true'])\n",
      'PermissionError');
    await execError(m, k, "import os\nos.system('true')", 'PermissionError');
    await execError(m, k, "import os\nos.execv('/bin/true', ['true'])", 'PermissionError');
    // The kernel is still this process (the exec did not happen).
    assert.equal((await execOk(k, '6 * 7')).result.data['text/plain'], '42');
  });

  it('sandbox_env_filtered', async function () {
    process.env.KH_TEST_SECRET = 's3cret-value';
    process.env.KH_TEST_GRANTED = 'granted-value';
    try {
      const m = manager();
      const k = await kernelOf(m, {
        permissions: { env: ['KH_TEST_GRANTED'] }, env: { KH_OWN: 'own-value' },
      });
      const r = await execOk(k,
        'import ctypes, os\n' +
        'libc = ctypes.CDLL(None)\n' +
        'libc.getenv.restype = ctypes.c_char_p\n' +
        "assert libc.getenv(b'KH_TEST_SECRET') is None\n" +
        "assert b's3cret-value' not in open('/proc/self/environ', 'rb').read()\n" +
        "(os.environ.get('KH_TEST_SECRET'), os.environ.get('KH_TEST_GRANTED'),\n" +
        " os.environ.get('KH_OWN'), libc.getenv(b'KH_OWN'))");
      assert.equal(r.result.data['text/plain'],
        "(None, 'granted-value', 'own-value', b'own-value')");
    } finally {
      delete process.env.KH_TEST_SECRET;
      delete process.env.KH_TEST_GRANTED;
    }
  });

  it('sandbox_memory_limit', async function () {
    const m = manager();
    const k = await kernelOf(m, { limits: { memoryBytes: 1073741824 } });
    await execError(m, k, 'x = bytearray(4 << 30)', 'MemoryError');
    // The kernel survives its MemoryError.
    const r = await execOk(k, 'len(bytearray(1 << 20))');
    assert.equal(r.result.data['text/plain'], '1048576');
  });

  it('sandbox_max_output', async function () {
    const m = manager();
    const k = await kernelOf(m, { limits: { maxOutputBytes: 1000 } });
    // print() (the runtime's streams) and fd 1 (os.write, C code, subprocesses) are both cut.
    let r = await execOk(k,
      'import os\n' +
      "print('Q' * 5000)\n" +
      "print('Q' * 5000)\n" +
      "os.write(1, b'J' * 5000)\n" +
      "os.write(1, b'J' * 5000)\n");
    let text = streamText(r);
    assert.ok(text.includes('output truncated after 1000'), text.slice(0, 300));
    for (const c of ['Q', 'J']) {
      const n = countChar(text, c);
      assert.ok(n <= 1000 && n >= 900, `${n} x ${c}`);
    }
    // The limit is per cell: the next cell's output comes out whole.
    r = await execOk(k, "print('Z' * 500)");
    text = streamText(r);
    assert.equal(countChar(text, 'Z'), 500);
    assert.equal(text.includes('truncated'), false);
    // Output the worker does not cut (display_data here) is bounded by the host itself:
    // 4 x maxOutputBytes + 64 KiB of events per cell, then one marker, and the reply comes.
    r = await execOk(k, "for i in range(300):\n    display('d' * 1000)\n");
    assert.ok(streamText(r).includes('output cut by the host'), streamText(r));
    assert.ok(r.outputs.length < 100, String(r.outputs.length));
    assert.ok(outputsOf(r, 'display_data').length > 0);
  });

  it('sandbox_pool_claim', async function () {
    const t = tree();
    const m = manager({ pool: { size: 1 } });
    // A warm worker claimed for a sandboxed kernel gets the sandbox exactly like a cold one.
    const a = await kernelOf(m, { permissions: { read: [t.r] } });
    let info = kernelInfo(m, a.id);
    assert.equal(info.pooled, true);
    assert.equal(info.sandbox.layers.landlock, true);
    await readDeniedIn(m, a, t);
    // The refilled pool serves an unconfined kernel next: nothing carried over.
    const b = await kernelOf(m, {});
    info = kernelInfo(m, b.id);
    assert.equal(info.pooled, true);
    assert.equal(info.sandbox, undefined);
    const r = await execOk(b, `open('${t.secret}').read()`);
    assert.equal(r.result.data['text/plain'], "'TOP-SECRET'");
  });

  it('sandbox_restart_confined', async function () {
    const t = tree();
    const m = manager();
    const k = await kernelOf(m, { permissions: { read: [t.r] } });
    await k.restart();
    await readDeniedIn(m, k, t);
  });

  it('sandbox_interrupt_works', async function () {
    const m = manager();
    const k = await kernelOf(m, { permissions: {}, limits: { cpuSeconds: 60 } });
    const sleeping = nextEvent(m, k.id, 'stream');
    const cell = k.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(100)");
    assert.equal((await sleeping).text, 'sleeping\n');
    await k.interrupt();
    const r = await cell;
    assert.equal(r.status, 'error');
    assert.equal(r.error.ename, 'KeyboardInterrupt');
  });

  it('sandbox_strict_refuses', async function () {
    // The probe reads KH_SANDBOX_PRETEND_MISSING once per process, before the first sandboxed
    // kernel: run the scenario in a fresh Node process with it set.
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'sandbox-strict.js')],
      { stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, KH_SANDBOX_PRETEND_MISSING: 'landlock' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { err += b; });
    const code = await new Promise((resolve) => child.on('exit', resolve));
    assert.equal(code, 0, err);
    const got = JSON.parse(out);
    // strict (the default): creation fails, naming what is missing; no kernel.
    assert.equal(got.strict.code, 'KH_ENOTSUP');
    assert.match(got.strict.message, /Landlock/);
    assert.equal(got.afterStrict, 0);
    // best-effort runs with what is there and says what is not.
    assert.equal(got.info.sandbox.mode, 'best-effort');
    assert.equal(got.info.sandbox.layers.landlock, false);
    assert.ok(got.info.sandbox.missing.length > 0);
    assert.equal(got.result, '2');
  });

});
