// node_roundtrip.js: execute("1+1") round trip from Node: p50/p99 over N runs (default 10,000)
// after a warm-up. Run: node bench/node_roundtrip.js [main_thread|worker|host] [N] [--json]
// ("host": a main_thread kernel whose cells run on the JS thread, kernel option thread "host")
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
  if (process.argv.includes('--json')) console.log(JSON.stringify(out));
  else {
    console.log(`node execute("1+1") round trip (${out.mode}) over ${n} runs: p50 ${out.p50_us.toFixed(1)} us, ` +
      `p99 ${out.p99_us.toFixed(1)} us (min ${out.min_us.toFixed(1)} us); ` +
      `kernel create-to-ready ${createMs.toFixed(1)} ms`);
  }
  await manager.close();
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
