// node_roundtrip.js: execute("1+1") round trip from Node: p50/p99 over N runs (default 10,000)
// after a warm-up. Run: node bench/node_roundtrip.js [main_thread|worker|host] [N] [hostcall]
// [--json] ("host": a main_thread kernel whose cells run on the JS thread, kernel option thread
// "host"). With "hostcall" it also times, in the same run and kernel, a host call round trip:
// Python calling kernelhost.host.noop(), a JS function that returns nothing, timed in the cell
// around each call (Python -> loop thread -> JS -> Python), N calls in one cell.
'use strict';
const { KernelManager, KernelMode } = require('..');

async function main() {
  const n = Number(process.argv.find((a) => /^\d+$/.test(a)) || 10000);
  const host = process.argv.includes('host');
  const mode = process.argv.includes('worker') ? KernelMode.WORKER : KernelMode.MAIN_THREAD;
  const manager = new KernelManager();
  const t0 = process.hrtime.bigint();
  const id = await manager.createKernel(host ? { mode, thread: 'host' } : { mode });
  const createMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const kernel = manager.getKernel(id);
  for (let i = 0; i < 500; i++) await kernel.execute('1+1');
  const us = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = process.hrtime.bigint();
    const r = await kernel.execute('1+1');
    us[i] = Number(process.hrtime.bigint() - s) / 1e3;
    if (r.status !== 'ok') throw new Error(`run ${i}: ${r.status}`);
  }
  us.sort();
  const q = (p) => us[Math.min(n - 1, Math.floor(p * n))];
  const out = { bench: 'node_roundtrip', mode: host ? 'host' : mode, runs: n, p50_us: q(0.5), p99_us: q(0.99),
    min_us: us[0], create_ms: createMs, node: process.version };
  if (process.argv.includes('hostcall')) {
    kernel.expose('noop', () => {});
    // The percentiles taken as above (floor(p * n)), where the samples are taken.
    const r = await kernel.execute([
      'import kernelhost, time',
      '_noop, _now, _s = kernelhost.host.noop, time.perf_counter_ns, []',
      `for _ in range(${Math.min(1000, n)}): _noop()`,
      `for _ in range(${n}):`,
      '    _t = _now(); _noop(); _s.append(_now() - _t)',
      '_s.sort()',
      "'%.1f %.1f' % tuple(_s[min(len(_s) - 1, int(p * len(_s)))] / 1000 for p in (0.5, 0.99))",
    ].join('\n'));
    if (r.status !== 'ok') throw new Error(`hostcall cell: ${r.error.ename}: ${r.error.evalue}`);
    const [p50, p99] = r.result.data['text/plain'].replace(/'/g, '').split(' ').map(Number);
    out.hostcall_p50_us = p50;
    out.hostcall_p99_us = p99;
  }
  if (process.argv.includes('--json')) console.log(JSON.stringify(out));
  else {
    console.log(`node execute("1+1") round trip (${out.mode}) over ${n} runs: p50 ${out.p50_us.toFixed(1)} us, ` +
      `p99 ${out.p99_us.toFixed(1)} us (min ${out.min_us.toFixed(1)} us); ` +
      `kernel create-to-ready ${createMs.toFixed(1)} ms`);
    if (out.hostcall_p50_us !== undefined) {
      console.log(`node host call round trip (${out.mode}), Python -> JS noop -> Python, over ${n} ` +
        `calls: p50 ${out.hostcall_p50_us} us, p99 ${out.hostcall_p99_us} us`);
    }
  }
  await manager.close();
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
