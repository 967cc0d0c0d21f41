// cases.test.js: the mocha harness of tests/cases/<concept>.json. The format, the matching
// rules and the checks made for every request are written once in tests/cases/README.md;
// tests/c/cases.c and tests/lua/cases_spec.lua implement the same rules. Each case is one it()
// named after it, so a behaviour has the same name here as in C and Lua.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const { assert, kernelhost, MODE, manager, closeAll } = require('./helpers');

const CASES_DIR = path.join(__dirname, '..', 'cases');

// --- matchers (tests/cases/README.md, "Matchers") ---------------------------------------------

function typeName(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v; // object, string, number, boolean
}

function show(v) {
  if (v === undefined) return '(missing)';
  return JSON.stringify(v).slice(0, 400);
}

function deepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch (e) {
    // Values from JSON nested deeper than assert's recursion goes (display_json_deep's 1900
    // levels): their JSON texts, which JSON.stringify still writes, compare the same way.
    if (e instanceof RangeError) return JSON.stringify(a) === JSON.stringify(b);
    return false;
  }
}

function isOps(exp) {
  if (exp === null || typeof exp !== 'object' || Array.isArray(exp)) return false;
  const keys = Object.keys(exp);
  const ops = keys.filter((k) => k.startsWith('$')).length;
  if (ops > 0 && ops < keys.length) throw new Error('a matcher mixes $ operators and keys');
  return ops > 0;
}

class Mismatch extends Error {}

function fail(where, what, exp, act) {
  throw new Mismatch(`${where || '(value)'}: ${what}: expected ${show(exp)}, got ${show(act)}`);
}

function needArray(op, arg, act, where) {
  if (!Array.isArray(act)) fail(where, op, arg, act);
}

const OPS = {
  $absent(arg, act, where) {
    if ((arg === true) !== (act === undefined)) fail(where, '$absent', arg, act);
  },
  $eq(arg, act, where) {
    if (!deepEqual(act, arg)) fail(where, '$eq', arg, act);
  },
  $type(arg, act, where) {
    const ok = arg === 'integer' ? Number.isInteger(act) : typeName(act) === arg;
    if (!ok) fail(where, '$type', arg, act);
  },
  $contains(arg, act, where) {
    if (typeof act !== 'string' || !act.includes(arg)) fail(where, '$contains', arg, act);
  },
  $not_contains(arg, act, where) {
    if (typeof act !== 'string' || act.includes(arg)) fail(where, '$not_contains', arg, act);
  },
  $prefix(arg, act, where) {
    if (typeof act !== 'string' || !act.startsWith(arg)) fail(where, '$prefix', arg, act);
  },
  // A binary value is a Buffer (the binding's form for kh_buffer_t); a string argument is the
  // hex (the host-function cases' {"$bytes": HEX}).
  $bytes(arg, act, where) {
    const hex = Buffer.isBuffer(act) ? act.toString('hex') : null;
    if (typeof arg === 'string') arg = { hex: arg };
    if (hex === null || (arg.hex !== undefined && hex !== arg.hex) ||
        (arg.prefix_hex !== undefined && !hex.startsWith(arg.prefix_hex)) ||
        (arg.len !== undefined && act.length !== arg.len)) fail(where, '$bytes', arg, act);
  },
  $min(arg, act, where) {
    if (typeof act !== 'number' || act < arg) fail(where, '$min', arg, act);
  },
  $max(arg, act, where) {
    if (typeof act !== 'number' || act > arg) fail(where, '$max', arg, act);
  },
  $len(arg, act, where) {
    needArray('$len of an array', arg, act, where);
    match(arg, act.length, `${where}.length`);
  },
  $each(arg, act, where) {
    needArray('$each', arg, act, where);
    act.forEach((v, i) => match(arg, v, `${where}[${i}]`));
  },
  $some(arg, act, where) {
    needArray('$some', arg, act, where);
    if (!act.some((v, i) => matches(arg, v, `${where}[${i}]`))) fail(where, '$some', arg, act);
  },
  $all(arg, act, where) {
    for (const m of arg) match(m, act, where);
  },
  $item(arg, act, where) {
    needArray('$item', arg, act, where);
    for (const [k, m] of Object.entries(arg)) {
      let i = Number(k);
      if (i < 0) i += act.length;
      const sub = `${where}[${k}]`;
      if (i < 0 || i >= act.length) fail(sub, '$item', m, undefined);
      match(m, act[i], sub);
    }
  },
};

/** Throws a Mismatch unless act (undefined: missing) matches exp. */
function match(exp, act, where = '') {
  if (isOps(exp)) {
    for (const [op, arg] of Object.entries(exp)) {
      if (!(op in OPS)) throw new Error(`unknown matcher operator ${op}`);
      if (op !== '$absent' && act === undefined) fail(where, op, arg, act);
      OPS[op](arg, act, where);
    }
    return;
  }
  if (act === undefined) fail(where, 'missing', exp, act);
  if (exp === null) {
    if (act !== null) fail(where, 'not null', exp, act);
  } else if (Array.isArray(exp)) {
    if (!Array.isArray(act) || act.length !== exp.length) {
      fail(where, 'not an array of that length', exp, act);
    }
    exp.forEach((v, i) => match(v, act[i], `${where}[${i}]`));
  } else if (typeof exp === 'object') {
    if (act === null || typeof act !== 'object' || Array.isArray(act)) {
      fail(where, 'not an object', exp, act);
    }
    for (const [k, v] of Object.entries(exp)) match(v, act[k], where ? `${where}.${k}` : k);
  } else if (exp !== act) {
    fail(where, 'not equal', exp, act);
  }
}

function matches(exp, act, where) {
  try {
    match(exp, act, where);
    return true;
  } catch (err) {
    if (err instanceof Mismatch) return false;
    throw err;
  }
}

// --- running a case ---------------------------------------------------------------------------

const codeOf = (c) => (typeof c === 'string' ? c : c.join('\n'));
/** An editor request's reply in the core's snake_case: the facade's camelCase undone, except
 * inside data and metadata (which it leaves as they are). */
function toCoreDeep(v) {
  if (Array.isArray(v)) return v.map(toCoreDeep);
  if (v === null || typeof v !== 'object') return v;
  const out = {};
  for (const [k, x] of Object.entries(v)) {
    out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] =
      k === 'data' || k === 'metadata' ? x : toCoreDeep(x);
  }
  return out;
}

// Execute options in the facade's spelling.
function execOptions(o) {
  if (o === undefined) return undefined;
  const names = {
    store_history: 'storeHistory', stop_on_error: 'stopOnError', allow_stdin: 'allowStdin',
  };
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [names[k] || k, v]));
}

const snake = (k) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * A kernel list entry or info object in the core's snake_case: the facade's camelCase undone
 * where it applies it (top-level keys, and inside options and sandbox, but never inside env).
 */
function toCore(o, deep = false) {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return o;
  return Object.fromEntries(Object.entries(o).map(([k, v]) => {
    const key = snake(k);
    if (key === 'env') return [key, v];
    return [key, deep || key === 'options' || key === 'sandbox' ? toCore(v, true) : v];
  }));
}

/** The reply in the core's shape (the facade renames executionCount). */
function canonicalReply(r) {
  const out = { status: r.status, execution_count: r.executionCount, outputs: r.outputs };
  if (r.result !== undefined) out.result = r.result;
  if (r.error !== undefined) out.error = r.error;
  return out;
}

class Run {
  constructor(c, mode) {
    this.case = c;
    this.mode = mode;
    this.step = 0;
    this.kernels = new Map();
    this.reqs = [];
    this.completed = 0;
    this.events = [];
    this.idsSeen = new Set();
    this.comms = new Map(); // `${kernelId}\0${commId}` -> the latest handle's record
    this.commList = [];
    this.m = manager(c.manager);
    this.listeners = [];
    this.fns = new Map(); // `${kernel}\0${name}` -> {name, calls}
    this.held = new Set(); // answers of host functions not given yet
    this.inCall = false;
    this.hostThread = new Set(); // kernels created with thread: "host"
    this.m.on('kernelEvent', (e) => {
      this.events.push(e);
      // Inputs are answered from inside the event listener, as a Node host does.
      if (e.type === 'input_request') {
        const q = this.inFlight(e.kernelId, e.data.executionId);
        if (q !== undefined && q.spec.inputs !== undefined) {
          const v = q.spec.inputs[q.answered++];
          if (v === undefined) this.error = this.error || this.err('more input requests than inputs');
          else q.kernel.inputReply(v).catch((err) => { this.error = this.error || err; });
        }
      }
      for (const l of this.listeners.slice()) l();
    });
  }

  err(msg) {
    return new Error(`case ${this.case.name}, step ${this.step} (${this.mode} mode): ${msg}`);
  }

  fail(msg) {
    throw this.err(msg);
  }

  expect(exp, act, what) {
    try {
      match(exp, act);
    } catch (err) {
      if (err instanceof Mismatch) this.fail(`${what}: ${err.message}`);
      throw err;
    }
  }

  /** Resolves once pred() holds, checked now and after every event. */
  until(pred) {
    if (pred()) return Promise.resolve();
    return new Promise((resolve) => {
      const l = () => {
        if (!pred()) return;
        this.listeners.splice(this.listeners.indexOf(l), 1);
        resolve();
      };
      this.listeners.push(l);
    });
  }

  kernel(name = 'k') {
    const k = this.kernels.get(name);
    if (k === undefined) this.fail(`no kernel named ${name} in this case`);
    return k;
  }

  kernelOptions(o = {}) {
    return o.mode === undefined ? { mode: this.mode, ...o } : { ...o };
  }

  /** Checks a settled promise against {code, message} (no code: it must have fulfilled). */
  outcome(exp = {}, settled, what) {
    const ok = settled.status === 'fulfilled';
    const code = ok ? undefined : settled.reason.code;
    if (exp.code === undefined && !ok) {
      this.fail(`${what} failed: ${code}: ${settled.reason.message}`);
    }
    if (exp.code !== undefined && (ok || code !== exp.code)) {
      this.fail(`${what}: expected ${exp.code}, got ${ok ? 'success' : code}`);
    }
    if (exp.message !== undefined) this.expect(exp.message, ok ? '' : settled.reason.message, 'message');
  }

  async create(name, opts, exp) {
    if (this.kernels.has(name)) this.fail(`kernel ${name} created twice`);
    const [settled] = await Promise.allSettled([this.m.createKernel(this.kernelOptions(opts))]);
    this.outcome(exp, settled, 'create');
    if (settled.status === 'fulfilled') this.kernels.set(name, this.m.getKernel(settled.value));
    // Its cells run inside the call that runs them, and its host functions with them.
    if (opts && opts.thread === 'host') this.hostThread.add(name);
  }

  submit(spec) {
    const k = this.kernel(spec.kernel);
    const q = { spec, kernel: k, calls: 0, answered: 0, from: this.events.length };
    this.reqs.push(q);
    this.inCall = true;
    let p;
    try {
      p = k.execute(codeOf(spec.execute), execOptions(spec.options));
    } finally {
      this.inCall = false;
    }
    // A then() handler always runs later; only the promise's own state, which util.inspect
    // reads synchronously, tells a promise settled inside the call (a refused call: it returns
    // a rejected promise) from one settled afterwards (a completion, which comes from the loop).
    q.refused = !util.inspect(p).includes('<pending>');
    q.done = p.then((r) => {
      q.reply = canonicalReply(r);
      // Known at once, so that a comm message queued behind this cell finds its own busy.
      if (q.reply.outputs.length > 0) q.id = q.reply.outputs[0].data.executionId;
    }, (err) => {
      if (typeof err.code !== 'string') throw err;
      q.code = err.code;
      q.msg = err.message;
    }).then(() => {
      q.calls++;
      q.order = ++this.completed;
    });
    return q;
  }

  /** The record of a comm handle: what its 'msg' and 'close' listeners got, from when it was
   * made (a newer handle of the same comm takes over its events). */
  commHandle(k, c) {
    const key = `${k.id}\0${c.commId}`;
    let h = this.comms.get(key);
    if (h === undefined || h.comm !== c) {
      if (h !== undefined && h.upto === undefined) h.upto = this.events.length;
      h = { comm: c, kernel: k, from: this.events.length, got: [] };
      this.comms.set(key, h);
      this.commList.push(h);
      c.on('msg', (d) => h.got.push({ type: 'comm_msg', data: d }));
      c.on('close', (d) => h.got.push({ type: 'comm_close', data: d }));
    }
    return h;
  }

  /** A COMM step (tests/cases/README.md): the host's side of a comm message, the facade's way.
   * It completes with its idle status; its id is its kernel's first busy status after the call
   * that belongs to no other request. */
  submitComm(spec) {
    const k = this.kernel(spec.kernel);
    const q = { spec, kernel: k, calls: 0, answered: 0, comm: true, from: this.events.length };
    this.reqs.push(q);
    const opts = {};
    if (spec.metadata !== undefined) opts.metadata = spec.metadata;
    // Hex strings: the buffers are Buffers of those bytes (a Uint8Array for the second, so that
    // both forms the facade takes are used).
    if (spec.buffers !== undefined) {
      opts.buffers = spec.buffers.map((h, i) => (i === 1 ? new Uint8Array(Buffer.from(h, 'hex'))
        : Buffer.from(h, 'hex')));
    }
    try {
      if (spec.comm === 'open') {
        const c = k.openComm(spec.target_name, spec.data,
          { ...opts, ...(spec.comm_id !== undefined ? { commId: spec.comm_id } : {}) });
        this.commHandle(k, c);
      } else {
        const c = k.comm(spec.comm_id);
        const h = this.commHandle(k, c);
        if (spec.comm === 'msg') {
          c.send(spec.data, opts);
        } else if (spec.comm === 'close') {
          c.close(spec.data, opts);
          h.upto = this.events.length; // the host's own close: nothing after it
        } else {
          this.fail(`unknown comm verb ${spec.comm}`);
        }
      }
    } catch (err) {
      if (typeof err.code !== 'string') throw err;
      q.refused = true;
      q.code = err.code;
      q.msg = err.message;
      q.done = Promise.resolve().then(() => { q.calls++; });
      return q;
    }
    q.refused = false;
    q.done = this.until(() => this.commProgress(q)).then(() => {
      q.calls++;
      q.order = ++this.completed;
    });
    return q;
  }

  /** Learns a comm message's id; true once its idle status came. Its busy comes only after the
   * requests submitted before it on its kernel have completed (whose ids are known by then: the
   * facade hands them out with their replies). */
  commProgress(q) {
    if (q.id === undefined) {
      const before = this.reqs.slice(0, this.reqs.indexOf(q));
      if (before.some((p) => p.kernel === q.kernel && !p.refused && p.calls === 0)) return false;
      const taken = new Set(this.reqs.map((p) => p.id).filter((id) => id !== undefined));
      q.id = this.firstBusy(q.kernel.id, q.from, taken);
      if (q.id === undefined) return false;
    }
    return this.events.some((e) => e.kernelId === q.kernel.id && e.type === 'status' &&
      e.data.executionId === q.id && e.data.execution_state === 'idle');
  }

  /** Every comm_msg / comm_close of a comm the harness holds a handle of reached the handle's
   * listeners, once each, in order. */
  checkComms() {
    for (const h of this.commList) {
      const want = [];
      const upto = h.upto === undefined ? this.events.length : h.upto;
      for (let n = h.from; n < upto; n++) {
        const e = this.events[n];
        if (e.kernelId !== h.kernel.id) continue;
        if ((e.type === 'comm_msg' || e.type === 'comm_close') && e.data.comm_id === h.comm.commId) {
          want.push({ type: e.type, data: e.data });
          if (e.type === 'comm_close') break; // a closed comm hears nothing more
        }
        if (e.type === 'status' && ['restarting', 'dead'].includes(e.data.execution_state)) break;
      }
      if (want.length !== h.got.length) {
        this.fail(`comm ${h.comm.commId}: ${want.length} events, ${h.got.length} listener calls`);
      }
      want.forEach((w, i) => {
        if (w.type !== h.got[i].type || w.data !== h.got[i].data) {
          this.fail(`comm ${h.comm.commId}: listener call ${i} is not the event ${i}`);
        }
      });
    }
  }

  /**
   * The facade's execute() does not hand out the execution id: a request's id is learnt from its
   * reply (every output carries it) or, for a request that ran without a reply, from its busy
   * status: a kernel runs requests one at a time in submission order, so the busy statuses after
   * a batch was submitted belong, in order, to the requests of the batch that ran.
   */
  firstBusy(kernelId, from, taken) {
    for (let n = from; n < this.events.length; n++) {
      const e = this.events[n];
      if (e.kernelId === kernelId && e.type === 'status' && e.data.execution_state === 'busy' &&
          e.data.executionId !== '' && !taken.has(e.data.executionId)) return e.data.executionId;
    }
    return undefined;
  }

  /** The request in flight on this kernel with this execution id, learning ids as it goes. */
  inFlight(kernelId, executionId) {
    const taken = new Set(this.reqs.map((q) => q.id).filter((id) => id !== undefined));
    for (const q of this.reqs) {
      if (q.kernel.id !== kernelId || q.calls !== 0 || q.comm) continue;
      if (q.id === undefined) {
        q.id = this.firstBusy(kernelId, q.from, taken);
        if (q.id !== undefined) taken.add(q.id);
      }
      if (q.id === executionId) return q;
    }
    return undefined;
  }

  due(q, when) {
    if (q.id === undefined) q.id = this.firstBusy(q.kernel.id, q.from, new Set());
    if (when === 'busy') return q.id !== undefined;
    if (when !== null && typeof when === 'object' && when.stdout !== undefined) {
      return this.streamText(q, 'stdout').includes(when.stdout);
    }
    return this.fail('unknown "when" in during');
  }

  learnIds(first) {
    const reqs = this.reqs.slice(first);
    for (const q of reqs) {
      if (q.id === undefined && q.reply !== undefined && q.reply.outputs.length > 0) {
        q.id = q.reply.outputs[0].data.executionId;
      }
    }
    const taken = new Set(reqs.map((q) => q.id).filter((id) => id !== undefined));
    for (const q of reqs) {
      if (q.id !== undefined || q.reply !== undefined || q.refused) continue;
      q.id = this.firstBusy(q.kernel.id, reqs[0].from, taken);
      if (q.id !== undefined) taken.add(q.id);
    }
  }

  async duringDo(q, what) {
    let p;
    if (what === 'interrupt') p = q.kernel.interrupt();
    else if (what === 'restart') p = q.kernel.restart();
    else if (what === 'destroy') p = this.m.destroyKernel(q.kernel.id);
    else this.fail(`unknown "do" in during: ${what}`);
    const [settled] = await Promise.allSettled([p]);
    if (settled.status === 'rejected') {
      this.fail(`during ${what}: ${settled.reason.code}: ${settled.reason.message}`);
    }
  }

  async waitRequests(first, during) {
    const reqs = this.reqs.slice(first);
    let all = false;
    const settled = Promise.all(reqs.map((q) => q.done)).then(() => { all = true; });
    if (during !== undefined) {
      const q1 = reqs[0];
      await Promise.race([this.until(() => all || this.due(q1, during.when)), settled]);
      if (!this.due(q1, during.when)) this.fail('the request completed before its "during" was due');
      await this.duringDo(q1, during.do);
    }
    await settled;
    if (this.error) throw this.error;
  }

  /** The request's events as {type, data} (merged: adjacent streams of one name). */
  requestEvents(q, merge) {
    const out = [];
    for (const e of this.events) {
      if (e.data.executionId !== q.id || e.kernelId !== q.kernel.id) continue;
      const last = out[out.length - 1];
      if (merge && last && e.type === 'stream' && last.type === 'stream' &&
          last.data.name === e.data.name) {
        last.data = { ...last.data, text: last.data.text + e.data.text };
      } else {
        out.push({ type: e.type, data: e.data });
      }
    }
    return out;
  }

  streamText(q, name) {
    if (q.id === undefined) return '';
    return this.events.filter((e) => e.type === 'stream' && e.data.executionId === q.id &&
      e.data.name === name).map((e) => e.data.text).join('');
  }

  checkRequest(q) {
    const exp = q.spec.expect || {};
    const got = q.code === undefined ? 'a reply' : q.code;
    if (exp.refused !== undefined) {
      if (!q.refused || q.code !== exp.refused) {
        this.fail(`expected the call to be refused with ${exp.refused}, got ${q.refused ? got :
          `an accepted request (${got})`}`);
      }
    } else if (q.refused) {
      this.fail(`the call was refused: ${q.code}: ${q.msg}`);
    } else if (exp.failed !== undefined) {
      if (q.code !== exp.failed) this.fail(`expected the request to fail with ${exp.failed}, got ${got}`);
    } else if (q.code !== undefined) {
      this.fail(`the request failed: ${q.code}: ${q.msg}`);
    }
    if (exp.message !== undefined) this.expect(exp.message, q.msg || '', 'message');
    if (exp.refused !== undefined) return;
    if (q.id !== undefined) {
      if (q.id === '') this.fail('an execution id is empty');
      if (this.idsSeen.has(q.id)) this.fail(`execution id ${q.id} given twice`);
      this.idsSeen.add(q.id);
    }
    // Every event carries the kernel's id (and, as this binding does, both ids in its data); with
    // a reply, the events are its outputs.
    const events = this.events.filter((e) => e.data.executionId === q.id && q.id !== undefined);
    for (const e of events) {
      if (e.kernelId !== q.kernel.id || e.data.kernelId !== q.kernel.id) {
        this.fail(`an event of ${q.id} is not tagged with its kernel`);
      }
    }
    if (q.reply !== undefined) {
      const outs = q.reply.outputs;
      if (outs.length !== events.length) this.fail(`${events.length} events, ${outs.length} outputs`);
      outs.forEach((o, i) => {
        if (o.type !== events[i].type || !deepEqual(o.data, events[i].data)) {
          this.fail(`output ${i} is not the subscriber's event ${i}`);
        }
      });
    }
    for (const [k, v] of Object.entries(exp)) {
      const what = `expect.${k}`;
      if (['status', 'execution_count', 'result', 'error'].includes(k)) {
        if (q.reply === undefined) this.fail(`${what}: the request got no reply`);
        this.expect(v, q.reply[k], what);
      } else if (k === 'events') {
        this.expect(v, q.id === undefined ? [] : this.requestEvents(q, true), what);
      } else if (k === 'streams') {
        for (const [name, m] of Object.entries(v)) {
          this.expect(m, this.streamText(q, name), `${what}.${name}`);
        }
      } else if (k === 'counts') {
        for (const [type, m] of Object.entries(v)) {
          const n = q.id === undefined ? 0 :
            events.filter((e) => e.type === type).length;
          this.expect(m, n, `${what}.${type}`);
        }
      } else if (!['refused', 'failed', 'message'].includes(k)) {
        this.fail(`unknown expect key ${k}`);
      }
    }
  }

  /** Requests of one batch that ran complete in order; no two requests' events interleave. */
  checkBatchOrder(first) {
    let lastPrev = -1;
    const reqs = this.reqs.slice(first);
    reqs.forEach((q, i) => {
      for (let j = 0; j < i; j++) {
        const p = reqs[j];
        if (q.reply && p.reply && p.order > q.order) {
          this.fail(`request ${i + 1} of the batch completed before request ${j + 1}`);
        }
      }
      if (q.id === undefined) return;
      let lo = -1;
      let hi = -1;
      this.events.forEach((e, n) => {
        if (e.data.executionId !== q.id) return;
        if (lo < 0) lo = n;
        hi = n;
      });
      if (lo >= 0 && lo < lastPrev) {
        this.fail(`events of request ${i + 1} came before the end of the previous one`);
      }
      if (hi >= 0) lastPrev = hi;
    });
  }

  async kernelCall(verb, step) {
    const name = verb === 'input_reply' ? step.kernel : step[verb];
    const k = this.kernel(name);
    let p;
    if (verb === 'restart') p = k.restart();
    else if (verb === 'destroy') p = this.m.destroyKernel(k.id);
    else if (verb === 'interrupt') p = k.interrupt();
    else p = k.inputReply(step[verb]);
    const [settled] = await Promise.allSettled([p]);
    this.outcome(step.expect, settled, verb);
  }

  async kernelEvents(name, exp) {
    const id = this.kernel(name).id;
    const own = () => this.events.filter((e) => e.kernelId === id && e.data.executionId === '')
      .map((e) => ({ type: e.type, data: e.data }));
    await this.until(() => own().length >= exp.length);
    this.expect(exp, own(), 'kernel_events');
  }

  /** An editor request ("request" step), through the facade's camelCase methods. */
  editorCall(k, step) {
    const opts = step.timeout !== undefined ? { timeout: step.timeout } : undefined;
    const code = step.code !== undefined ? codeOf(step.code) : undefined;
    switch (step.request) {
      case 'complete': return k.complete(code, step.cursor_pos, opts);
      case 'inspect': return k.inspect(code, step.cursor_pos, step.detail_level, opts);
      case 'is_complete': return k.isComplete(code, opts);
      case 'history': return k.history(step.history);
      case 'kernel_info': return k.kernelInfo(opts);
      default: return this.fail(`unknown request "${step.request}"`);
    }
  }

  async request(step) {
    let k = this.kernel(step.kernel);
    const exp = step.expect || {};
    if (step.kernel_id !== undefined) {
      // A handle whose kernel is gone: the facade hands out handles of existing kernels only.
      k = this.m.getKernel(await this.m.createKernel(this.kernelOptions({})));
      await this.m.destroyKernel(k.id);
    }
    let cell;
    if (step.while !== undefined) {
      cell = this.submit({ execute: step.while.execute, kernel: step.kernel });
      await this.until(() => {
        if (cell.calls > 0) this.fail('the "while" cell ended before its marker');
        return this.due(cell, step.while.when);
      });
    }
    const p = this.editorCall(k, step);
    const refusedAtOnce = !util.inspect(p).includes('<pending>');
    if (step.interrupt && !refusedAtOnce) await k.interrupt(); // while the request is in flight
    const [settled] = await Promise.allSettled([p]);
    if (cell !== undefined && cell.calls > 0 && !step.interrupt) {
      this.fail('the "while" cell ended before the answer: the request waited for it');
    }
    if (exp.failed !== undefined && refusedAtOnce) this.fail(`${step.request} was refused, not failed`);
    this.outcome({ code: exp.refused || exp.failed, message: exp.message }, settled, step.request);
    if (exp.reply !== undefined) this.expect(exp.reply, toCoreDeep(settled.value), step.request);
    if (cell !== undefined) {
      await cell.kernel.interrupt();
      await cell.done;
    }
  }

  // --- host functions ("expose", "host_calls": tests/cases/README.md, "Host functions") ----

  /** The JS function for behaviour bh of host function fn ({name, calls}). */
  hostFunction(fn, bh) {
    const toHost = (v) => {
      if (Array.isArray(v)) return v.map(toHost);
      if (v === null || typeof v !== 'object') return v;
      const keys = Object.keys(v);
      if (keys.length === 1 && keys[0] === '$bytes' && typeof v.$bytes === 'string') {
        return Buffer.from(v.$bytes, 'hex');
      }
      return Object.fromEntries(keys.map((k) => [k, toHost(v[k])]));
    };
    const record = (args) => {
      if (this.inCall && !this.hostThread.has(fn.kernel)) {
        this.error = this.error || this.err(`host function ${fn.name} ran inside an API call`);
      }
      fn.calls.push(args);
      return args;
    };
    // A later answer is the settling of the promise the function returned, on a later turn.
    const hold = (settle) => {
      const p = new Promise((resolve, reject) => setImmediate(() => settle(resolve, reject)));
      const tracked = p.finally(() => this.held.delete(tracked));
      this.held.add(tracked);
      tracked.catch(() => {});
      return p;
    };
    if (bh.run !== undefined) {
      return (...args) => {
        record(args);
        const target = this.kernel(bh.run.kernel);
        const p = (async () => {
          let r;
          try {
            r = await target.execute(codeOf(bh.run.code));
          } catch (err) {
            throw new Error(err.code);
          }
          if (r.status === 'ok') return r.result ? r.result.data['text/plain'] : '';
          throw new Error(`${r.error.ename}: ${r.error.evalue}`);
        })();
        const tracked = p.finally(() => this.held.delete(tracked));
        this.held.add(tracked);
        tracked.catch(() => {});
        return p;
      };
    }
    if (bh.echo === undefined && bh.error === undefined && bh.return === undefined) {
      this.fail(`host function ${fn.name} has no behaviour`);
    }
    const later = bh.later === true;
    return (...args) => {
      record(args);
      if (bh.error !== undefined) {
        if (!later) throw new Error(bh.error);
        return hold((_, reject) => reject(new Error(bh.error)));
      }
      const v = bh.echo ? args : toHost(bh.return);
      return later ? hold((resolve) => resolve(v)) : v;
    };
  }

  expose(step) {
    const kname = step.kernel || 'k';
    const k = this.kernel(kname);
    let settled = { status: 'fulfilled' };
    for (const [name, bh] of Object.entries(step.expose)) { // in the order written
      const key = `${kname}\0${name}`;
      let fn = this.fns.get(key);
      if (fn === undefined && bh !== null) {
        fn = { name, kernel: kname, calls: [] };
        this.fns.set(key, fn);
      }
      this.inCall = true;
      try {
        k.expose(name, bh === null ? null : this.hostFunction(fn, bh));
      } catch (err) {
        if (typeof err.code !== 'string') throw err;
        settled = { status: 'rejected', reason: err };
      } finally {
        this.inCall = false;
      }
      if (settled.status === 'rejected') break;
    }
    this.outcome(step.expect, settled, 'expose');
  }

  hostCalls(step) {
    const fn = this.fns.get(`${step.kernel || 'k'}\0${step.host_calls}`);
    this.expect(step.expect, fn === undefined ? [] : fn.calls, 'host_calls');
  }

  async runStep(step) {
    if (step.execute !== undefined || step.comm !== undefined || step.batch !== undefined) {
      const first = this.reqs.length;
      for (const item of step.batch || [step]) {
        if (item.comm !== undefined) this.submitComm(item);
        else this.submit(item);
      }
      await this.waitRequests(first, step.during);
      this.learnIds(first);
      for (const q of this.reqs.slice(first)) this.checkRequest(q);
      if (step.batch !== undefined) this.checkBatchOrder(first);
    } else if (step.create !== undefined) {
      await this.create(step.create, step.options, step.expect);
    } else if (step.manager !== undefined) {
      let m;
      let settled;
      try {
        m = new kernelhost.KernelManager(step.manager);
        settled = { status: 'fulfilled' };
      } catch (err) {
        if (typeof err.code !== 'string') throw err;
        settled = { status: 'rejected', reason: err };
      }
      this.outcome(step.expect, settled, 'manager');
      if (m !== undefined) await m.close();
    } else if (step.kernel_events !== undefined) {
      await this.kernelEvents(step.kernel_events, step.expect);
    } else if (step.list !== undefined) {
      const list = this.m.listKernels(step.list === null ? undefined : step.list);
      this.expect(step.expect, list.map((o) => toCore(o)), 'list');
    } else if (step.request !== undefined) {
      await this.request(step);
    } else if (step.info !== undefined) {
      const info = this.m.getKernelInfo(this.kernel(step.info).id);
      this.expect(step.expect, info === undefined ? undefined : toCore(info), 'info');
    } else if (step.expose !== undefined) {
      this.expose(step);
    } else if (step.host_calls !== undefined) {
      this.hostCalls(step);
    } else {
      const verb = ['restart', 'destroy', 'interrupt', 'input_reply']
        .find((v) => step[v] !== undefined);
      if (verb === undefined) this.fail('a step with no known verb');
      await this.kernelCall(verb, step);
    }
  }
}

async function runCase(c, mode) {
  const r = new Run(c, mode);
  if (c.kernel !== null) await r.create('k', c.kernel, undefined);
  for (const [i, step] of c.steps.entries()) {
    r.step = i + 1;
    await r.runStep(step);
    if (r.error) throw r.error;
  }
  r.step = 0;
  // Every answer a host function held was given by the end of the case.
  await Promise.allSettled([...r.held]);
  if (r.held.size !== 0) r.fail('a host function never answered a call');
  if (r.error) throw r.error;
  r.checkComms();
  await closeAll();
  for (const q of r.reqs) if (q.calls !== 1) r.fail('a request never completed');
}

for (const file of fs.readdirSync(CASES_DIR).filter((f) => f.endsWith('.json')).sort()) {
  const doc = JSON.parse(fs.readFileSync(path.join(CASES_DIR, file), 'utf8'));
  describe(`cases: ${doc.concept}`, function () {
    afterEach(closeAll);
    for (const c of doc.cases) {
      if (c.only !== undefined && c.only !== MODE) {
        it(`${c.name} (${c.only} only: ${c.reason})`);
      } else {
        it(c.name, () => runCase(c, c.only || MODE));
      }
    }
  });
}
