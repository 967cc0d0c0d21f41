// events.js: subscribe to a kernel's events (streamed output, rich display, status), and use
// executeStream. Run: node examples/node/events.js
'use strict';
const { KernelManager, KernelMode, KernelEvents } = require('../..');

async function main() {
  const manager = new KernelManager();
  const id = await manager.createKernel({ mode: KernelMode.MAIN_THREAD });
  const kernel = manager.getKernel(id);

  manager.onKernelEvent(id, KernelEvents.STREAM, (data) => process.stdout.write(data.text));
  manager.onKernelEvent(id, KernelEvents.DISPLAY_DATA, (data) => {
    console.log('[display]', Object.keys(data.data).join(', '));
  });
  manager.onKernelEvent(id, KernelEvents.STATUS, (data) => {
    console.log(`[status] ${data.execution_state} (${data.executionId.slice(0, 8)})`);
  });
  manager.on('kernelEvent', ({ type }) => { if (type === 'execute_error') console.log('[error]'); });

  await kernel.execute([
    'import time',
    'for i in range(3):',
    '    print(f"step {i}")',
    '    time.sleep(0.1)',
    "display({'text/html': '<b>done</b>', 'text/plain': 'done'}, raw=True)",
  ].join('\n'));

  for await (const item of kernel.executeStream("print('streamed')\n6 * 7")) {
    if (item.type) console.log('[iterator]', item.type);
    else console.log('[iterator] result', item.result.data['text/plain']);
  }

  // Interrupt a busy cell: the event loop keeps running meanwhile.
  const running = kernel.execute('while True: pass');
  setTimeout(() => kernel.interrupt(), 200);
  console.log('interrupted:', (await running).error.ename);

  await manager.close();
}

main().catch((e) => {
  console.error(e.code || '', e.message);
  process.exitCode = 1;
});
