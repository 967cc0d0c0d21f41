// core-sources.js: prints what CMake compiles into the core, for binding.gyp, so the two
// builds cannot drift: `sources` gives KH_CORE_SOURCES (CMakeLists.txt plus the worker's
// core/worker/sources.cmake when it exists) relative to the directory given as argv[3];
// `defines` gives KH_CORE_DEFS. The generated runtime (${KH_EMBED_C}) is left to the gyp action.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const what = process.argv[2];
const rel = process.argv[3] || '.';

function listOps(file, name) {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8').replace(/#[^\n]*/g, '');
  const out = [];
  const re = new RegExp(`(?:set\\(\\s*${name}|list\\(\\s*APPEND\\s+${name})\\s+([^)]*)\\)`, 'g');
  for (const m of text.matchAll(re)) {
    for (const item of m[1].split(/\s+/)) if (item && !item.includes('${')) out.push(item);
  }
  return out;
}

const files = [path.join(root, 'CMakeLists.txt'), path.join(root, 'core', 'worker', 'sources.cmake')];
if (what === 'sources') {
  const srcs = files.flatMap((f) => listOps(f, 'KH_CORE_SOURCES'));
  console.log(srcs.map((s) => `${rel}/${s}`).join('\n'));
} else if (what === 'pysources') {
  // KH_PY_SOURCES, in CMake's order (the embedded runtime's module list), as absolute paths.
  const text = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8').replace(/#[^\n]*/g, '');
  const m = text.match(/set\(\s*KH_PY_SOURCES\s+([^)]*)\)/);
  const items = m ? m[1].split(/\s+/).filter(Boolean) : [];
  console.log(items.map((s) => s.replace('${CMAKE_SOURCE_DIR}', root)).join('\n'));
} else if (what === 'defines') {
  console.log(files.flatMap((f) => listOps(f, 'KH_CORE_DEFS')).join('\n'));
} else {
  process.exitCode = 2;
}
