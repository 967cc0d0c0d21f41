// basic.js: create a kernel, run cells, read results and errors. Run: node examples/node/basic.js
'use strict';
const { KernelManager, KernelMode } = require('../..');

async function main() {
  const manager = new KernelManager();
  const id = await manager.createKernel({ mode: KernelMode.MAIN_THREAD });
  const kernel = manager.getKernel(id);

  const r = await kernel.execute('1 + 1');
  console.log(r.status, r.executionCount, r.result.data['text/plain']); // ok 1 2

  await kernel.execute('import math\nradius = 2');
  const area = await kernel.execute('math.pi * radius ** 2');
  console.log('area:', area.result.data['text/plain']);

  const err = await kernel.execute('1 / 0'); // a Python exception is a result, not a rejection
  console.log(err.status, err.error.ename, err.error.evalue);

  await manager.close();
}

main().catch((e) => {
  console.error(e.code || '', e.message);
  process.exitCode = 1;
});
