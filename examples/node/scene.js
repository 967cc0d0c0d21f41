// scene.js: a cell drives a tiny host scene through exposed functions: entities() answers at
// once, move(id, dx, dy) answers with a Promise that settles on the scene's next tick (as a
// game answers on its next frame). Run: node examples/node/scene.js
'use strict';
const { KernelManager, KernelMode, KernelEvents } = require('../..');

async function main() {
  const manager = new KernelManager();
  const id = await manager.createKernel({ mode: KernelMode.MAIN_THREAD });
  const kernel = manager.getKernel(id);
  manager.onKernelEvent(id, KernelEvents.STREAM, (d) => process.stdout.write(d.text));

  const scene = new Map([[1, { id: 1, name: 'ship', x: 0, y: 0 }], [2, { id: 2, name: 'rock', x: 5, y: 5 }]]);
  const nextTick = () => new Promise((resolve) => setTimeout(resolve, 16));

  kernel
    .expose('entities', () => [...scene.values()])
    .expose('move', async (eid, dx, dy) => {
      const e = scene.get(eid);
      if (e === undefined) throw new Error(`no entity ${eid}`); // HostError in Python
      await nextTick();
      e.x += dx;
      e.y += dy;
      return e;
    });

  const r = await kernel.execute([
    'import kernelhost',
    'for e in kernelhost.host.entities():',
    "    print(f\"{e['name']} at ({e['x']}, {e['y']})\")",
    'for _ in range(3):',
    '    ship = kernelhost.host.move(1, 1.5, 0.5)',
    "print('ship now at', (ship['x'], ship['y']))",
    'try:',
    '    kernelhost.host.move(99, 0, 0)',
    'except kernelhost.HostError as e:',
    "    print('refused:', e)",
  ].join('\n'));
  console.log(r.status, scene.get(1));
  await manager.close();
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
