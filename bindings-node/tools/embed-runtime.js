// embed-runtime.js: the gyp action that generates runtime_sources.c, exactly as CMake does:
// node embed-runtime.js <embed.cmake> <a.py> <b.py> ... <out.c>
'use strict';
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const args = process.argv.slice(2).map((p) => path.resolve(p));
const embed = args.shift();
const out = args.pop();
require('node:fs').mkdirSync(path.dirname(out), { recursive: true });
execFileSync('cmake', [`-DOUT=${out}`, `-DSOURCES=${args.join(';')}`, '-P', embed],
  { stdio: 'inherit' });
