// notebook.js: the page: cells (code, markdown), their outputs as kernel events stream in, one
// kernel per tab over the server's WebSocket (server.js says the messages), .ipynb open/save.
// Output HTML is untrusted (any cell can make it): it is sanitised with DOMPurify before it is
// shown, and the page's Content-Security-Policy runs no script but the page's own.
import { marked } from '/vendor/marked/marked.esm.js';
import DOMPurify from '/vendor/dompurify/purify.es.mjs';
import { AnsiUp } from '/vendor/ansi_up/ansi_up.js';
import katex from '/vendor/katex/katex.mjs';

const $ = (id) => document.getElementById(id);
const ansi = new AnsiUp();
const cellsEl = $('cells');

// ---- the connection ------------------------------------------------------------------------
let ws = null;
let nextRid = 1;
const pending = new Map(); // rid -> {resolve, reject}
let kernelId = null;

function call(op, args = {}) {
  return new Promise((resolve, reject) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reject(Object.assign(new Error('not connected'), { code: 'ECONN' }));
      return;
    }
    const rid = nextRid++;
    pending.set(rid, { resolve, reject });
    ws.send(JSON.stringify({ op, rid, ...args }));
  });
}

function onMessage(ev) {
  const msg = JSON.parse(ev.data);
  if (msg.rid !== undefined && pending.has(msg.rid)) {
    const p = pending.get(msg.rid);
    pending.delete(msg.rid);
    if (msg.ok) p.resolve(msg);
    else p.reject(Object.assign(new Error(msg.message), { code: msg.code }));
  } else if (msg.ev === 'output' && msg.kernelId === kernelId) {
    const cell = cells.find((c) => c.id === msg.cellId);
    if (cell) cell.event(msg.type, msg.data);
  } else if (msg.ev === 'status' && msg.kernelId === kernelId) {
    setState(msg.state);
  } else if (msg.ok === false) {
    say(`server: ${msg.message}`);
  }
}

function setState(state) {
  const el = $('kernel-state');
  el.textContent = state;
  el.className = `state ${state}`;
}

function say(text) {
  $('message').textContent = text;
}

// ---- rendering -----------------------------------------------------------------------------
const join = (v) => (Array.isArray(v) ? v.join('') : v);

// Jupyter's rule for streams: "\r" moves back to the start of the line, and what follows
// overwrites it character by character (progress bars); "\r\n" is a plain newline.
function carriageReturns(text) {
  return text.replace(/\r+\n/g, '\n').split('\n')
    .map((line) => line.split('\r').reduce((base, over) => over + base.slice(over.length)))
    .join('\n');
}

function pre(html, cls) {
  const p = document.createElement('pre');
  if (cls) p.className = cls;
  p.innerHTML = html;
  return p;
}

function latex(text) {
  const m = /^\s*(\$\$?)([\s\S]*)\1\s*$/.exec(text);
  const tex = m ? m[2] : text.replace(/^\\\[|\\\]$/g, '');
  const div = document.createElement('div');
  // KaTeX escapes what it is given and runs nothing (trust: false).
  div.innerHTML = katex.renderToString(tex, { displayMode: true, throwOnError: false });
  return div;
}

// The richest form of a MIME bundle the page can show (Jupyter's order, without JavaScript).
function renderBundle(data, metadata = {}) {
  const div = document.createElement('div');
  const html = join(data['text/html']);
  if (html !== undefined) {
    div.className = 'html';
    div.innerHTML = DOMPurify.sanitize(html);
    return div;
  }
  if (data['text/markdown'] !== undefined) {
    div.className = 'markdown-rendered';
    div.innerHTML = DOMPurify.sanitize(marked.parse(join(data['text/markdown'])));
    return div;
  }
  if (data['text/latex'] !== undefined) return latex(join(data['text/latex']));
  // SVG as an image: an <img> never runs the scripts an SVG may hold.
  const img = document.createElement('img');
  const size = (mime) => {
    const m = metadata[mime] || metadata;
    if (m.width) img.width = m.width;
    if (m.height) img.height = m.height;
  };
  if (data['image/svg+xml'] !== undefined) {
    img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(join(data['image/svg+xml']))}`;
    size('image/svg+xml');
    return img;
  }
  for (const mime of ['image/png', 'image/jpeg', 'image/gif', 'image/webp']) {
    if (data[mime] !== undefined) {
      img.src = `data:${mime};base64,${join(data[mime]).replace(/\s/g, '')}`;
      size(mime);
      return img;
    }
  }
  if (data['application/json'] !== undefined) {
    return pre(ansi.ansi_to_html(JSON.stringify(data['application/json'], null, 2)));
  }
  return pre(ansi.ansi_to_html(join(data['text/plain'] ?? '')));
}

// ---- cells ---------------------------------------------------------------------------------
const cells = [];
let selected = null;
const displays = new Map(); // display_id -> [{cell, out}]

function uuid() {
  return crypto.randomUUID();
}

class Cell {
  constructor(type = 'code', source = '', id = uuid()) {
    this.id = /^[a-zA-Z0-9_-]{1,64}$/.test(id) ? id : uuid();
    this.type = type;
    this.executionCount = null;
    this.metadata = {}; // kept as the file had it (tags, collapsed, ...)
    this.attachments = undefined;
    this.outs = []; // {nb: the nbformat output, el}
    this.clearOnNext = false;
    this.el = document.createElement('div');
    this.el.className = `cell ${type}`;
    this.el.dataset.cellId = this.id;
    this.el.dataset.state = 'idle';
    this.prompt = document.createElement('div');
    this.prompt.className = 'prompt';
    const body = document.createElement('div');
    body.className = 'cell-body';
    this.input = document.createElement('textarea');
    this.input.spellcheck = false;
    this.input.value = source;
    this.input.rows = Math.max(1, source.split('\n').length);
    this.rendered = document.createElement('div');
    this.rendered.className = 'markdown-rendered';
    this.outputsEl = document.createElement('div');
    this.outputsEl.className = 'outputs';
    const tools = document.createElement('div');
    tools.className = 'tools';
    this.typeSel = document.createElement('select');
    for (const t of ['code', 'markdown', 'raw']) this.typeSel.add(new Option(t, t));
    this.typeSel.value = type;
    this.typeSel.addEventListener('change', () => this.setType(this.typeSel.value));
    const del = document.createElement('button');
    del.textContent = '✕';
    del.title = 'Delete cell';
    del.addEventListener('click', () => removeCell(this));
    tools.append(this.typeSel, del);
    body.append(tools, this.input, this.rendered, this.outputsEl);
    this.el.append(this.prompt, body);
    this.el.addEventListener('focusin', () => select(this));
    this.rendered.addEventListener('dblclick', () => this.edit());
    this.input.addEventListener('input', () => {
      this.input.rows = Math.max(1, this.input.value.split('\n').length);
      closeCompletions();
    });
    this.input.addEventListener('keydown', (e) => keydown(this, e));
    this.showPrompt();
    this.rendered.hidden = true;
  }

  setType(type) {
    this.type = type;
    this.el.className = `cell ${type}${selected === this ? ' selected' : ''}`;
    if (type !== 'code') this.clearOutputs();
    this.executionCount = null;
    this.showPrompt();
  }

  showPrompt(running) {
    if (this.type !== 'code') this.prompt.textContent = '';
    else this.prompt.textContent = `[${running ? '*' : this.executionCount ?? ' '}]:`;
  }

  edit() {
    this.rendered.hidden = true;
    this.input.hidden = false;
    this.input.focus();
  }

  renderMarkdown() {
    this.rendered.innerHTML = DOMPurify.sanitize(marked.parse(this.input.value));
    this.rendered.hidden = false;
    this.input.hidden = true;
  }

  clearOutputs() {
    for (const o of this.outs) o.el.remove();
    this.outs = [];
    this.clearOnNext = false;
  }

  addOutput(nb, displayId) {
    const out = { nb, el: document.createElement('div') };
    this.outs.push(out);
    this.outputsEl.append(out.el);
    this.draw(out);
    if (displayId) {
      if (!displays.has(displayId)) displays.set(displayId, []);
      displays.get(displayId).push({ cell: this, out });
    }
    return out;
  }

  draw(out) {
    const nb = out.nb;
    let el;
    if (nb.output_type === 'stream') {
      el = pre(ansi.ansi_to_html(carriageReturns(join(nb.text))));
      out.el.className = `output stream ${nb.name}`;
    } else if (nb.output_type === 'error') {
      el = pre(ansi.ansi_to_html(nb.traceback.join('\n')));
      out.el.className = 'output error';
      out.el.dataset.ename = nb.ename;
    } else {
      el = renderBundle(nb.data, nb.metadata);
      out.el.className = `output ${nb.output_type}`;
    }
    out.el.replaceChildren(el);
  }

  // One kernel event of this cell's request.
  event(type, data) {
    if (type === 'clear_output') {
      if (data.wait) this.clearOnNext = true;
      else this.clearOutputs();
      return;
    }
    if (type === 'update_display_data') {
      for (const { out } of displays.get(data.transient?.display_id) || []) {
        out.nb.data = data.data;
        out.nb.metadata = data.metadata || {};
        this.draw.call(this, out);
      }
      return;
    }
    if (this.clearOnNext) this.clearOutputs();
    if (type === 'stream') {
      const last = this.outs[this.outs.length - 1];
      if (last && last.nb.output_type === 'stream' && last.nb.name === data.name) {
        last.nb.text = carriageReturns(last.nb.text + data.text);
        this.draw(last);
      } else {
        this.addOutput(
          { output_type: 'stream', name: data.name, text: carriageReturns(data.text) });
      }
    } else if (type === 'display_data') {
      this.addOutput(
        { output_type: 'display_data', data: data.data, metadata: data.metadata || {} },
        data.transient?.display_id);
    } else if (type === 'execute_result') {
      this.addOutput({ output_type: 'execute_result', execution_count: data.execution_count,
        data: data.data, metadata: data.metadata || {} });
    } else if (type === 'execute_error') {
      this.addOutput({ output_type: 'error', ename: data.ename, evalue: data.evalue,
        traceback: data.traceback });
    } else if (type === 'input_request') {
      this.askInput(data);
    }
  }

  askInput(data) {
    const row = document.createElement('label');
    row.className = 'input-request';
    const prompt = document.createElement('span');
    prompt.textContent = data.prompt;
    const box = document.createElement('input');
    box.type = data.password ? 'password' : 'text';
    row.append(prompt, box);
    this.outputsEl.append(row);
    box.focus();
    box.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter') return;
      e.preventDefault();
      const value = box.value;
      row.replaceChildren(pre(''));
      row.firstChild.textContent = data.prompt + (data.password ? '········' : value);
      row.className = 'input-answered';
      call('input', { kernelId, value }).catch((err) => say(`input: ${err.message}`));
    });
  }

  async run() {
    if (this.type === 'markdown') {
      this.renderMarkdown();
      return;
    }
    if (this.type !== 'code') return;
    this.clearOutputs();
    this.el.dataset.state = 'running';
    this.showPrompt(true);
    try {
      const r = await call('execute', { kernelId, cellId: this.id, code: this.input.value });
      this.executionCount = r.status === 'aborted' ? null : r.executionCount;
    } catch (err) {
      const text = `[${err.code}] ${err.message}\n`;
      this.addOutput({ output_type: 'stream', name: 'stderr', text });
    }
    this.el.dataset.state = 'idle';
    this.showPrompt();
  }

  toJSON() {
    const source = this.input.value;
    if (this.type !== 'code') {
      const c = { id: this.id, cell_type: this.type, metadata: this.metadata, source };
      if (this.attachments) c.attachments = this.attachments;
      return c;
    }
    return { id: this.id, cell_type: 'code', execution_count: this.executionCount ?? null,
      metadata: this.metadata, source, outputs: this.outs.map((o) => o.nb) };
  }
}

function select(cell) {
  if (selected === cell) return;
  if (selected) selected.el.classList.remove('selected');
  selected = cell;
  cell.el.classList.add('selected');
}

function addCell(after, type, source) {
  const cell = new Cell(type, source);
  const i = after ? cells.indexOf(after) + 1 : cells.length;
  cells.splice(i, 0, cell);
  if (i + 1 < cells.length) cellsEl.insertBefore(cell.el, cells[i + 1].el);
  else cellsEl.append(cell.el);
  return cell;
}

function removeCell(cell) {
  cells.splice(cells.indexOf(cell), 1);
  cell.el.remove();
  if (cells.length === 0) addCell(null).input.focus();
}

function keydown(cell, e) {
  if (completion && completionKey(e)) return;
  if (e.key === 'Enter' && (e.shiftKey || e.ctrlKey)) {
    e.preventDefault();
    cell.run();
    if (e.shiftKey) {
      const next = cells[cells.indexOf(cell) + 1] || addCell(cell);
      next.edit();
    }
  } else if (e.key === 'Tab' && !e.shiftKey && cell.type === 'code') {
    e.preventDefault();
    complete(cell);
  }
}

// ---- completion (the kernel's complete request) ---------------------------------------------
let completion = null; // {cell, list, items, active, start, end}

const codePoints = (s) => [...s].length;
const utf16At = (s, cp) => [...s].slice(0, cp).join('').length;

function insert(cell, start, end, text) {
  const ta = cell.input;
  ta.setRangeText(text, start, end, 'end');
  ta.dispatchEvent(new Event('input'));
}

async function complete(cell) {
  const ta = cell.input;
  const code = ta.value;
  const pos = ta.selectionStart;
  const before = code.slice(0, pos);
  // At the start of a line or after blanks, Tab indents, as in Jupyter.
  if (/(^|\n)[ \t]*$/.test(before) || !kernelId) {
    insert(cell, pos, ta.selectionEnd, '    ');
    return;
  }
  let r;
  try {
    r = await call('complete', { kernelId, code, cursorPos: codePoints(before) });
  } catch (err) {
    say(`completion: ${err.message}`);
    return;
  }
  if (ta.value !== code || r.matches.length === 0) return;
  const start = utf16At(code, r.cursorStart);
  const end = utf16At(code, r.cursorEnd);
  if (r.matches.length === 1) {
    insert(cell, start, end, r.matches[0]);
    return;
  }
  showCompletions(cell, r.matches, start, end);
}

function showCompletions(cell, matches, start, end) {
  closeCompletions();
  const list = document.createElement('ul');
  list.className = 'completions';
  const items = matches.slice(0, 200).map((m, i) => {
    const li = document.createElement('li');
    li.textContent = m;
    li.addEventListener('mousedown', (e) => {
      e.preventDefault();
      pick(i);
    });
    list.append(li);
    return li;
  });
  list.style.left = '8px';
  list.style.top = `${cell.input.offsetTop + cell.input.offsetHeight}px`;
  cell.input.parentElement.append(list);
  completion = { cell, list, items, matches, active: 0, start, end };
  items[0].classList.add('active');
}

function pick(i) {
  const c = completion;
  closeCompletions();
  insert(c.cell, c.start, c.end, c.matches[i]);
}

function closeCompletions() {
  if (completion) completion.list.remove();
  completion = null;
}

function completionKey(e) {
  const c = completion;
  const move = (d) => {
    c.items[c.active].classList.remove('active');
    c.active = (c.active + d + c.items.length) % c.items.length;
    c.items[c.active].classList.add('active');
    c.items[c.active].scrollIntoView({ block: 'nearest' });
  };
  if (e.key === 'ArrowDown' || (e.key === 'Tab' && !e.shiftKey)) move(1);
  else if (e.key === 'ArrowUp' || (e.key === 'Tab' && e.shiftKey)) move(-1);
  else if (e.key === 'Enter') pick(c.active);
  else if (e.key === 'Escape') closeCompletions();
  else return false;
  e.preventDefault();
  return true;
}

// ---- notebooks -----------------------------------------------------------------------------
let notebookMetadata = {}; // the opened file's, kept on save

function toNotebook() {
  return {
    nbformat: 4, nbformat_minor: 5,
    metadata: {
      kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' },
      language_info: { name: 'python' },
      ...notebookMetadata,
    },
    cells: cells.map((c) => c.toJSON()),
  };
}

function loadNotebook(nb) {
  for (const c of cells) c.el.remove();
  cells.length = 0;
  displays.clear();
  notebookMetadata = nb.metadata && typeof nb.metadata === 'object' ? nb.metadata : {};
  for (const c of nb.cells || []) {
    const type = ['code', 'markdown', 'raw'].includes(c.cell_type) ? c.cell_type : 'raw';
    const cell = new Cell(type, join(c.source ?? ''), c.id);
    if (c.metadata && typeof c.metadata === 'object') cell.metadata = c.metadata;
    if (type !== 'code' && c.attachments) cell.attachments = c.attachments;
    cells.push(cell);
    cellsEl.append(cell.el);
    if (type === 'markdown') cell.renderMarkdown();
    if (type !== 'code') continue;
    cell.executionCount = c.execution_count ?? null;
    cell.showPrompt();
    for (const o of c.outputs || []) {
      const out = { ...o };
      if (out.output_type === 'stream') out.text = join(out.text);
      cell.addOutput(out);
    }
  }
  if (cells.length === 0) addCell(null);
}

async function refreshFiles(choose) {
  const { files } = await call('list');
  const sel = $('files');
  sel.replaceChildren(...files.map((f) => new Option(f, f)));
  if (choose && files.includes(choose)) sel.value = choose;
}

async function openFile(name) {
  const { notebook } = await call('open', { path: name });
  loadNotebook(notebook);
  $('path').value = name;
  document.title = `${name} - kernelhost notebook`;
  say(`opened ${name}`);
  document.body.dataset.opened = name;
}

async function saveFile() {
  const name = $('path').value.trim();
  const r = await call('save', { path: name, notebook: toNotebook() });
  await refreshFiles(r.path);
  say(`saved ${r.path}`);
  document.body.dataset.saved = r.path;
}

// ---- kernels -------------------------------------------------------------------------------
async function startKernel(preset) {
  if (kernelId) {
    const old = kernelId;
    kernelId = null;
    await call('shutdown', { kernelId: old }).catch(() => {});
  }
  setState('starting');
  try {
    const r = await call('start', { preset });
    kernelId = r.kernelId;
    sessionStorage.setItem('kernel', JSON.stringify({ kernelId, preset }));
    setState('idle');
    say(`kernel ${preset} started`);
  } catch (err) {
    setState('error');
    say(`kernel ${preset}: ${err.message}`);
  }
}

async function attachOrStart() {
  const saved = JSON.parse(sessionStorage.getItem('kernel') || 'null');
  if (saved) {
    try {
      await call('attach', { kernelId: saved.kernelId });
      kernelId = saved.kernelId;
      $('preset').value = saved.preset;
      setState('idle');
      return;
    } catch {
      // culled or never ours: start a new one
    }
  }
  await startKernel($('preset').value);
}

function guard(fn) {
  return (...args) => Promise.resolve().then(() => fn(...args))
    .catch((err) => say(`${err.code || 'error'}: ${err.message}`));
}

function wire() {
  $('add').addEventListener('click', () => addCell(selected).edit());
  $('run-all').addEventListener('click', guard(() => Promise.all(cells.map((c) => c.run()))));
  $('interrupt').addEventListener('click', guard(() => call('interrupt', { kernelId })));
  $('restart').addEventListener('click', guard(async () => {
    await call('restart', { kernelId });
    say('kernel restarted');
  }));
  $('preset').addEventListener('change', guard(() => startKernel($('preset').value)));
  $('open').addEventListener('click', guard(() => openFile($('files').value)));
  $('save').addEventListener('click', guard(saveFile));
  document.addEventListener('keydown', (e) => {
    if (e.key === 's' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      guard(saveFile)();
    }
  });
  document.addEventListener('mousedown', (e) => {
    if (completion && !completion.list.contains(e.target)) closeCompletions();
  });
}

function connect() {
  ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.addEventListener('message', onMessage);
  ws.addEventListener('close', () => {
    setState('disconnected');
    for (const p of pending.values()) {
      p.reject(Object.assign(new Error('disconnected'), { code: 'ECONN' }));
    }
    pending.clear();
  });
  ws.addEventListener('open', guard(async () => {
    const hello = await call('hello');
    $('preset').replaceChildren(...hello.presets.map((p) => new Option(p.label, p.id)));
    await refreshFiles();
    await attachOrStart();
    document.body.dataset.ready = 'true';
  }));
}

wire();
addCell(null).edit();
connect();
