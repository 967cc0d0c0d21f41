// core-sources.js: prints a section of core/sources.txt, the one list of what makes the core
// (CMakeLists.txt reads the same file), for binding.gyp: `sources <rel>` gives the [c] files
// relative to <rel>, `pysources` the [py] modules as absolute paths in embedding order, `worker`
// the [worker] files relative to <rel>. The generated runtime is left to the gyp action.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const [what, rel = '.'] = process.argv.slice(2);

function section(name) {
  const out = [];
  let current = '';
  for (const raw of fs.readFileSync(path.join(root, 'core', 'sources.txt'), 'utf8').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const header = line.match(/^\[([a-z]+)\]$/);
    if (header) current = header[1];
    else if (line && current === name) out.push(line);
  }
  return out;
}

const lists = {
  sources: () => section('c').map((s) => `${rel}/${s}`),
  // The Jupyter wire server: in the addon, not in the worker.
  wire: () => section('wire').map((s) => `${rel}/${s}`),
  pysources: () => section('py').map((s) => path.join(root, s)),
  worker: () => section('worker').map((s) => `${rel}/${s}`),
};
if (!lists[what]) {
  console.error(`core-sources.js: unknown list "${what}" (sources, wire, pysources, worker)`);
  process.exitCode = 2;
} else {
  console.log(lists[what]().join('\n'));
}
