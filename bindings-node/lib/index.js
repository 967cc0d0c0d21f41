// index.js: the JS facade over the native addon: KernelManager (an EventEmitter), Kernel,
// Promises for every request, the event dispatch to per-kernel listeners and the one conversion
// of the core's snake_case JSON into this module's camelCase shapes (camelKeys). Everything runs
// on the JS thread of the environment that loaded the addon. The core delivers every event,
// reply and cancellation from the loop, never inside the call that caused it, so a listener or
// a promise continuation always finds the API call that caused it finished.
'use strict';

const { EventEmitter } = require('node:events');
const crypto = require('node:crypto');
const path = require('node:path');

// node-gyp builds into build/Release (build/Debug with --debug); a missing addon is reported
// with what to run, since a bare MODULE_NOT_FOUND for a .node path tells a user nothing.
function loadAddon() {
  const root = path.join(__dirname, '..', 'build');
  const tried = [];
  for (const dir of ['Release', 'Debug']) {
    const file = path.join(root, dir, 'kernelhost.node');
    try {
      return require(file);
    } catch (err) {
      if (err.code !== 'MODULE_NOT_FOUND') throw err;
      tried.push(file);
    }
  }
  const err = new Error(`kernelhost: the native addon is not built (looked for ${tried.join(', ')});` +
    ' run `npm install` or `npx node-gyp rebuild` in the package directory');
  err.code = 'MODULE_NOT_FOUND';
  throw err;
}

const native = loadAddon();

const KernelMode = Object.freeze({ MAIN_THREAD: 'main_thread', WORKER: 'worker', REMOTE: 'remote' });

const KernelEvents = Object.freeze({
  STREAM: 'stream',
  DISPLAY_DATA: 'display_data',
  UPDATE_DISPLAY_DATA: 'update_display_data',
  EXECUTE_RESULT: 'execute_result',
  EXECUTE_ERROR: 'execute_error',
  CLEAR_OUTPUT: 'clear_output',
  INPUT_REQUEST: 'input_request',
  STATUS: 'status',
  COMM_OPEN: 'comm_open',
  COMM_MSG: 'comm_msg',
  COMM_CLOSE: 'comm_close',
  ALL: '*',
});

/** Every error code the core can report, by name: { KH_EINVAL: -30001, ... }. */
const ErrorCodes = Object.freeze({ ...native.errorCodes });

const EVENT_NAMES = new Set(Object.values(KernelEvents));
const EXECUTE_OPTIONS = new Set(['silent', 'storeHistory', 'stopOnError', 'timeout',
  'allowStdin']);
// Where a NativeManager keeps its KernelManager (see onNativeEvent).
const OWNER = Symbol('kernelhost.owner');

function khError(code, message) {
  const err = new Error(message || code);
  err.code = code;
  return err;
}

function checkId(id, what = 'kernel id') {
  if (typeof id !== 'string') throw new TypeError(`${what} must be a string`);
}

function checkOptionalNamespace(ns) {
  if (ns !== undefined && ns !== null && typeof ns !== 'string') {
    throw new TypeError('namespace must be a string');
  }
  return ns === undefined ? null : ns;
}

// JSON.stringify turns NaN and the infinities into null, which the core reads as "not given":
// maxExecutionTime: NaN would silently mean no limit. So they are found first and refused as
// the core refuses any other bad value (KH_EOPTION, naming the option by its path).
function nonFiniteOption(v, path = '') {
  if (typeof v === 'number') {
    return Number.isFinite(v) ? null : `option '${path}' must be a finite number, got ${v}`;
  }
  if (v === null || typeof v !== 'object') return null;
  for (const [k, x] of Object.entries(v)) {
    const bad = nonFiniteOption(x, Array.isArray(v) ? `${path}[${k}]` : path ? `${path}.${k}` : k);
    if (bad) return bad;
  }
  return null;
}

function optionsJson(options, what) {
  if (options === undefined || options === null) return null;
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`${what} must be an object`);
  }
  return JSON.stringify(options);
}

// Execute options as the native call takes them, positionally (no property reads in C on the
// hot path): [silent, storeHistory, stopOnError, timeout, allowStdin], defaults as
// kh_execute_options_init.
function executeOptions(options) {
  if (options === undefined || options === null) return [false, true, true, 0, true];
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError('execute options must be an object');
  }
  for (const key of Object.keys(options)) {
    if (!EXECUTE_OPTIONS.has(key)) throw new TypeError(`unknown execute option "${key}"`);
  }
  const {
    silent = false, storeHistory = true, stopOnError = true, timeout = 0, allowStdin = true,
  } = options;
  for (const [name, v] of [['silent', silent], ['storeHistory', storeHistory],
    ['stopOnError', stopOnError], ['allowStdin', allowStdin]]) {
    if (typeof v !== 'boolean') throw new TypeError(`execute option ${name} must be a boolean`);
  }
  if (typeof timeout !== 'number') throw new TypeError('execute option timeout must be a number');
  if (!Number.isFinite(timeout) || timeout < 0) {
    throw new RangeError('execute option timeout must be a finite number of ms >= 0');
  }
  return [silent, storeHistory, stopOnError, Math.floor(timeout), allowStdin];
}

// Called by the addon for every event of the manager; `this` is the NativeManager. It captures
// nothing, so the addon's strong reference to it keeps no manager alive: an unreferenced
// manager can be collected, and its finalizer closes it.
// The core's binary values (image/png, comm buffers, ...) arrive beside the JSON as
// [path, Buffer] pairs, path a JSON Pointer (RFC 6901) to the null they replace.
function applyBuffers(doc, bufs) {
  if (bufs === undefined) return doc;
  for (const [path, buf] of bufs) {
    const steps = path.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    let parent = doc;
    for (let i = 0; i < steps.length - 1 && parent !== null && typeof parent === 'object'; i++)
      parent = parent[steps[i]];
    // defineProperty: a key "__proto__" (JSON.parse makes it an own property) stays a key.
    if (parent !== null && typeof parent === 'object')
      Object.defineProperty(parent, steps[steps.length - 1],
        { value: buf, writable: true, enumerable: true, configurable: true });
  }
  return doc;
}

function onNativeEvent(kernelId, executionId, type, json, bufs) {
  const owner = this[OWNER];
  if (owner !== undefined) owner._dispatch(kernelId, executionId, type, json, bufs);
}

// Called by the addon for every call of an exposed host function; `this` is the NativeManager
// (captures nothing, as onNativeEvent). `call` is the handle to answer through, once.
function onNativeHostCall(kernelId, name, args, call) {
  const owner = this[OWNER];
  if (owner === undefined) this.hostError(call, 'the kernelhost manager is gone');
  else owner._hostCall(kernelId, name, args, call);
}

// What a host function's throw (or rejection) tells Python: an Error's message (its name when
// the message is empty), any other thrown value as String() makes it.
function hostMessage(err) {
  if (err instanceof Error) return err.message || err.name;
  try {
    return String(err);
  } catch (_) {
    return 'the host function threw a value that has no string form';
  }
}

// A throwing listener must stop neither the other listeners nor this event's dispatch: its error
// is rethrown on the next tick, where it reaches 'uncaughtException' as any callback's would.
function reportListenerError(err) {
  process.nextTick(() => { throw err; });
}

// A one-consumer async queue behind executeStream().
class EventStream {
  constructor() {
    this._items = [];
    this._waiters = [];
    this._ended = false;
    this._error = null;
    this._cancelled = false;
  }

  push(item) {
    if (this._cancelled) return;
    this._items.push(item);
    this._settle();
  }

  end(err) {
    if (err) this._error = err;
    this._ended = true;
    this._settle();
  }

  _settle() {
    while (this._waiters.length > 0) {
      if (this._items.length > 0) {
        this._waiters.shift().resolve({ value: this._items.shift(), done: false });
      } else if (this._error) {
        const err = this._error;
        this._error = null;
        this._waiters.shift().reject(err);
      } else if (this._ended) {
        this._waiters.shift().resolve({ value: undefined, done: true });
      } else {
        break;
      }
    }
  }

  next() {
    return new Promise((resolve, reject) => {
      this._waiters.push({ resolve, reject });
      this._settle();
    });
  }

  // Leaving a for-await loop early: the request keeps running, its events are dropped here.
  return() {
    this._cancelled = true;
    this._items.length = 0;
    this._error = null;
    this._ended = true;
    this._settle();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

// Comm options: {commId} only when opening; {metadata, buffers} always. Returns the content
// and the buffers (an array of Buffers / TypedArrays / DataViews / ArrayBuffers, or undefined).
function commContent(commId, data, options, open) {
  if (data !== undefined && data !== null &&
      (typeof data !== 'object' || Array.isArray(data))) {
    throw new TypeError('comm data must be an object');
  }
  const content = { comm_id: commId };
  let buffers;
  if (options !== undefined && options !== null) {
    if (typeof options !== 'object' || Array.isArray(options)) {
      throw new TypeError('comm options must be an object');
    }
    for (const [key, v] of Object.entries(options)) {
      if (open && key === 'commId') {
        if (typeof v !== 'string') throw new TypeError('comm option commId must be a string');
        content.comm_id = v;
      } else if (key === 'metadata') {
        if (v === null || typeof v !== 'object' || Array.isArray(v)) {
          throw new TypeError('comm option metadata must be an object');
        }
        content.metadata = v;
      } else if (key === 'buffers') {
        if (!Array.isArray(v)) throw new TypeError('comm option buffers must be an array');
        buffers = v; // each checked by the addon (a TypeError for what holds no bytes)
      } else {
        throw new TypeError(`unknown comm option "${key}"`);
      }
    }
  }
  if (data !== undefined && data !== null) content.data = data;
  return { content, buffers };
}

/**
 * The host's side of a Jupyter comm: kernel.openComm() opens one, kernel.comm(id) names one the
 * kernel opened. An EventEmitter: 'msg' and 'close' carry the payload of the kernel's comm_msg /
 * comm_close events for this comm ({comm_id, data, metadata, buffers?, kernelId, executionId}),
 * after the kernel's own listeners of that event. send() and close() return once the message is
 * queued (as in Jupyter, the kernel's answers are comm events) and throw an Error with a `code`
 * when it is refused (KH_ECLOSED: the comm is not open).
 */
class Comm extends EventEmitter {
  constructor(kernel, commId, targetName) {
    super();
    Object.defineProperty(this, 'kernel', { value: kernel, enumerable: true });
    Object.defineProperty(this, 'commId', { value: commId, enumerable: true });
    Object.defineProperty(this, 'targetName', { value: targetName, enumerable: true });
  }

  /** Sends a comm_msg with `data` (an object) and options {metadata, buffers}. */
  send(data, options) {
    const { content, buffers } = commContent(this.commId, data, options, false);
    this.kernel._manager._commSend(this.kernel.id, 'comm_msg', content, buffers);
  }

  /** Closes the comm (a comm_close with `data`); its 'close' is for the kernel's close only. */
  close(data, options) {
    const m = this.kernel._manager;
    const { content, buffers } = commContent(this.commId, data, options, false);
    m._commSend(this.kernel.id, 'comm_close', content, buffers);
    m._commForget(this);
  }
}

/**
 * One kernel of a KernelManager served on Jupyter's wire protocol (manager.serveJupyter), so that
 * `jupyter console --existing <connectionFile>`, JupyterLab or jupyter_client attach to it while
 * this process keeps using the kernel too. An EventEmitter: 'shutdown' ({restart}) when a client
 * asked for a shutdown (what follows is the `shutdown` option's), and 'stopped' exactly once,
 * last, when the server has stopped for any reason (stop(), the kernel destroyed, the manager
 * closed, a client's shutdown). Like a listening net.Server it keeps the process alive until it
 * stops.
 */
class JupyterServer extends EventEmitter {
  constructor(manager, kernelId, optionsJson) {
    super();
    Object.defineProperty(this, '_manager', { value: manager });
    Object.defineProperty(this, 'kernelId', { value: kernelId, enumerable: true });
    this._stopped = false;
    this._stopPromise = null;
    this._resolveStop = null;
    // The note function holds this object; the addon holds it until 'stopped'.
    this._handle = manager._native.serveJupyter(kernelId, optionsJson,
      (note, restart) => this._note(note, restart));
    const info = this.info();
    Object.defineProperty(this, 'connectionFile', { value: info.connectionFile, enumerable: true });
    Object.defineProperty(this, 'connectionInfo', { value: info.connection, enumerable: true });
  }

  _note(note, restart) {
    if (note === 'stopped') {
      this._stopped = true;
      if (this._resolveStop !== null) this._resolveStop();
    }
    try {
      if (note === 'shutdown') this.emit('shutdown', { restart });
      else this.emit('stopped');
    } catch (err) {
      reportListenerError(err);
    }
  }

  /** True once 'stopped' was emitted. */
  get stopped() {
    return this._stopped;
  }

  /** {kernelId, connectionFile, connection, messages, dropped, stopping}: messages accepted,
   * messages dropped (bad signatures, malformed); after 'stopped', as they were then. */
  info() {
    const json = this._manager._native.jupyterInfo(this._handle);
    if (json === null) throw khError('KH_ENOMEM', 'out of memory');
    const { connection, ...rest } = JSON.parse(json);
    const out = camelKeys(rest);
    if (out.connectionFile === undefined) out.connectionFile = null;
    out.connection = connection; // the connection file's content, keys as Jupyter writes them
    return out;
  }

  /** Stops serving (the kernel keeps running) and removes the connection file; resolves on
   * 'stopped'. Every call returns the same Promise. */
  stop() {
    if (this._stopPromise === null) {
      this._stopPromise = new Promise((resolve, reject) => {
        if (this._stopped) {
          resolve();
          return;
        }
        this._resolveStop = resolve;
        try {
          this._manager._native.jupyterStop(this._handle);
        } catch (err) {
          reject(err);
        }
      });
    }
    return this._stopPromise;
  }
}

// A Kernel is a handle (id and mode) and nothing more: the kernel's state lives in the core, so
// a handle kept after a destroy just gets KH_ENOTFOUND. Frozen, as it can never change.
class Kernel {
  constructor(manager, id, mode) {
    this.id = id;
    this.mode = mode;
    Object.defineProperty(this, '_manager', { value: manager });
    Object.freeze(this);
  }

  /** Runs `code`; resolves with {status, executionCount, result?, error?, outputs}. */
  execute(code, options) {
    return this._manager._execute(this.id, code, options, null);
  }

  /** An async iterator of this request's events ({type, data}), then its result. */
  executeStream(code, options) {
    const stream = new EventStream();
    this._manager._execute(this.id, code, options, stream).then(
      (result) => {
        stream.push(result);
        stream.end();
      },
      (err) => stream.end(err));
    return stream;
  }

  /** Raises KeyboardInterrupt in the running cell, if any; editor requests in flight reject
   * with KH_ECANCELED. */
  interrupt() {
    return this._manager._call((n) => n.interrupt(this.id));
  }

  /** Answers the pending input_request. */
  inputReply(value) {
    if (typeof value !== 'string') throw new TypeError('value must be a string');
    return this._manager._call((n) => n.inputReply(this.id, value));
  }

  // Editor requests: each resolves with the content of Jupyter's reply, keys in camelCase
  // (data and metadata as they are). They do not wait behind a running cell. Cursor positions
  // count Unicode code points (Jupyter 5.2+), not UTF-16 units: 'é😀'.length is 3, its code
  // points 2. Omitted: the end of the code. options: {timeout} in ms (default 10000).

  /** Resolves with {status, matches, cursorStart, cursorEnd, metadata}. */
  complete(code, cursorPos, options) {
    return this._interact('complete', code, cursorPos, 0, options);
  }

  /** Resolves with {status, found, data: {'text/plain', 'text/markdown'}, metadata}. */
  inspect(code, cursorPos, detailLevel, options) {
    return this._interact('inspect', code, cursorPos, detailLevel === undefined ? 0 : detailLevel,
      options);
  }

  /** Resolves with {status: 'complete' | 'incomplete' | 'invalid' | 'unknown', indent?}. */
  isComplete(code, options) {
    return this._interact('isComplete', code, undefined, 0, options);
  }

  /** request: Jupyter's history_request content, e.g. {histAccessType: 'tail', n: 10}; resolves
   * with {status, history: [[session, line, input], ...]} (with output: true, [session, line,
   * [input, output]], output the execute_result's text/plain or null). */
  history(request) {
    if (request === null || typeof request !== 'object') throw new TypeError('request must be an object');
    const snake = {};
    for (const [k, v] of Object.entries(request)) snake[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
    return this._interact('history', JSON.stringify(snake), undefined, 0, undefined);
  }

  /** Resolves with Jupyter's kernel_info_reply content (protocolVersion, languageInfo, ...). */
  kernelInfo(options) {
    return this._interact('kernelInfo', '', undefined, 0, options);
  }

  _interact(op, code, cursorPos, detailLevel, options) {
    if (typeof code !== 'string') throw new TypeError('code must be a string');
    const timeout = options && options.timeout !== undefined ? options.timeout : 0;
    const pos = cursorPos === undefined || cursorPos === null ? -1 : cursorPos;
    return this._manager._request((n, done) => n.interact(this.id, op, code, pos, detailLevel,
      timeout, done)).then((json) => camelKeys(JSON.parse(json)));
  }

  /**
   * Exposes `fn` to this kernel's Python as `kernelhost.host.<name>(...)` (and
   * `kernelhost.call(name, ...)`), replacing a function exposed before under that name; `null`
   * withdraws it. fn(...args) gets the call's arguments (None -> null, int -> number, or BigInt
   * beyond 2^53, bytes -> Buffer) and answers with its return value, or the value its Promise
   * resolves to; a throw or a rejection raises kernelhost.HostError(message) in Python. Returns
   * this kernel; throws KH_EINVAL (name not a Python identifier), KH_ENOTFOUND, KH_ECLOSED.
   */
  expose(name, fn) {
    this._manager._expose(this.id, name, fn);
    return this;
  }

  /**
   * Opens a comm with the kernel's target `targetName` (registered in Python with
   * comm.get_comm_manager().register_target); `data` is an object, options {commId, metadata,
   * buffers} (commId: 32 hex digits when not given; buffers: Buffers, TypedArrays, DataViews or
   * ArrayBuffers, which Python gets as msg['buffers']). The comm_open is queued like a cell;
   * throws an Error with a `code` when refused. Returns the Comm.
   */
  openComm(targetName, data, options) {
    if (typeof targetName !== 'string') throw new TypeError('targetName must be a string');
    const { content, buffers } =
      commContent(crypto.randomUUID().replace(/-/g, ''), data, options, true);
    content.target_name = targetName;
    const m = this._manager;
    m._commSend(this.id, 'comm_open', content, buffers);
    return m._commHandle(this, content.comm_id, targetName);
  }

  /** The Comm of comm `commId` of this kernel (one the kernel or the host opened): the same
   * object while the comm is open, a new one after it closed. */
  comm(commId) {
    if (typeof commId !== 'string') throw new TypeError('commId must be a string');
    return this._manager._commHandle(this, commId, undefined);
  }

  /** Fresh namespace and counter, same id and options; queued requests reject KH_ECANCELED. */
  restart() {
    return this._manager._request((n, done) => n.restart(this.id, done));
  }
}

class KernelManager extends EventEmitter {
  constructor(options) {
    super();
    const json = optionsJson(options, 'manager options');
    const bad = nonFiniteOption(options);
    if (bad) throw khError('KH_EOPTION', bad);
    this._native = new native.NativeManager(json, onNativeEvent, onNativeHostCall);
    this._native[OWNER] = this;
    this._listeners = new Map(); // kernelId -> Map(type -> [{fn, removed}])
    this._streams = new Map(); // executionId -> EventStream
    this._kernels = new Map(); // kernelId -> Kernel
    this._exposed = new Map(); // kernelId -> Map(name -> host function)
    this._comms = new Map(); // kernelId -> Map(commId -> Comm), while the comm may be open
    this._closePromise = null;
  }

  // --- plumbing ---------------------------------------------------------------------------

  _checkOpen() {
    if (this._closePromise !== null) throw khError('KH_ECLOSED', 'the manager is closed');
  }

  // A synchronous native call as a Promise: API failures reject.
  _call(fn) {
    try {
      this._checkOpen();
      return Promise.resolve(fn(this._native));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  // A native call that completes through a callback (code, message, value). Run inside the
  // executor, so that a closed manager or a refused call rejects rather than throws.
  _request(fn) {
    return new Promise((resolve, reject) => {
      this._checkOpen();
      fn(this._native, (code, message, value) => {
        if (code) reject(khError(code, message));
        else resolve(value);
      });
    });
  }

  _execute(kernelId, code, options, stream) {
    if (typeof code !== 'string') throw new TypeError('code must be a string');
    const opts = executeOptions(options);
    return new Promise((resolve, reject) => {
      this._checkOpen();
      // The core delivers every event and the reply from the loop, never inside this call, so
      // the stream is registered before the request's first event ("busy") can arrive.
      const executionId = this._native.execute(kernelId, code, opts[0], opts[1], opts[2], opts[3],
        opts[4], (errCode, message, json, bufs) => {
          if (stream !== null) this._streams.delete(executionId);
          if (errCode) reject(khError(errCode, message));
          else resolve(toResult(kernelId, executionId, json, bufs));
        });
      if (stream !== null) this._streams.set(executionId, stream);
    });
  }

  _expose(kernelId, name, fn) {
    this._checkOpen();
    if (typeof name !== 'string') throw new TypeError('name must be a string');
    if (fn !== null && typeof fn !== 'function') {
      throw new TypeError('fn must be a function (or null to withdraw the name)');
    }
    this._native.expose(kernelId, name, fn !== null);
    let byName = this._exposed.get(kernelId);
    if (fn === null) {
      if (byName !== undefined) byName.delete(name);
      return;
    }
    if (byName === undefined) this._exposed.set(kernelId, (byName = new Map()));
    byName.set(name, fn);
  }

  // One call of a host function. A value answers at once; a thenable answers when it settles.
  // The call's late answer (the kernel was interrupted, restarted or destroyed meanwhile) is
  // dropped quietly: the addon reports KH_ECANCELED, which nobody needs to hear.
  _hostCall(kernelId, name, args, call) {
    const n = this._native;
    const byName = this._exposed.get(kernelId);
    const fn = byName === undefined ? undefined : byName.get(name);
    if (fn === undefined) {
      n.hostError(call, `no JS function is exposed as "${name}"`);
      return;
    }
    let value;
    let then;
    try {
      value = fn(...args);
      if (value !== null && (typeof value === 'object' || typeof value === 'function')) {
        then = value.then;
      }
    } catch (err) {
      n.hostError(call, hostMessage(err));
      return;
    }
    if (typeof then !== 'function') {
      n.hostReturn(call, value);
      return;
    }
    Promise.resolve(value).then((v) => n.hostReturn(call, v),
      (err) => n.hostError(call, hostMessage(err)));
  }

  // --- comms ------------------------------------------------------------------------------

  _commSend(kernelId, msgType, content, buffers) {
    this._checkOpen();
    this._native.commSend(kernelId, msgType, JSON.stringify(content), buffers);
  }

  // The one Comm of (kernel, commId) while its comm may be open: kept here so that its
  // listeners hear the kernel's messages, and so that kernel.comm(id) finds it again.
  _commHandle(kernel, commId, targetName) {
    let byId = this._comms.get(kernel.id);
    if (byId === undefined) this._comms.set(kernel.id, (byId = new Map()));
    let c = byId.get(commId);
    if (c === undefined || c.kernel !== kernel) {
      c = new Comm(kernel, commId, targetName);
      byId.set(commId, c);
    }
    return c;
  }

  _commForget(comm) {
    const byId = this._comms.get(comm.kernel.id);
    if (byId !== undefined && byId.get(comm.commId) === comm) byId.delete(comm.commId);
  }

  // comm_msg and comm_close to the Comm they name; a restart or a death ends a kernel's comms.
  _commRoute(kernelId, type, data) {
    const byId = this._comms.get(kernelId);
    if (byId === undefined) return;
    if (type === 'status') {
      if (data.execution_state === 'restarting' || data.execution_state === 'dead') {
        this._comms.delete(kernelId);
      }
      return;
    }
    const c = byId.get(data.comm_id);
    if (c === undefined) return;
    if (type === 'comm_close') byId.delete(data.comm_id);
    try {
      c.emit(type === 'comm_msg' ? 'msg' : 'close', data);
    } catch (err) {
      reportListenerError(err);
    }
  }

  // One event to its stream (if its request has one), then to the kernel's listeners, then to
  // its comm (comm_msg, comm_close), then to 'kernelEvent'. The payload keeps Jupyter's keys;
  // the two tags are this module's, in its style. Listeners run synchronously, in the core's
  // order.
  _dispatch(kernelId, executionId, type, json, bufs) {
    const data = applyBuffers(JSON.parse(json), bufs);
    data.kernelId = kernelId;
    data.executionId = executionId;
    const stream = this._streams.get(executionId);
    if (stream !== undefined) stream.push({ type, data });
    const byType = this._listeners.get(kernelId);
    if (byType !== undefined) {
      for (const key of [type, '*']) {
        const list = byType.get(key);
        if (list === undefined) continue;
        // A snapshot, so listeners added now wait for the next event; removed ones are skipped.
        for (const entry of list.slice()) {
          if (entry.removed) continue;
          try {
            entry.fn.call(this, key === '*' ? { type, data } : data);
          } catch (err) {
            reportListenerError(err);
          }
        }
      }
    }
    if (type === 'comm_msg' || type === 'comm_close' || type === 'status') {
      this._commRoute(kernelId, type, data);
    }
    if (this.listenerCount('kernelEvent') > 0) {
      try {
        this.emit('kernelEvent', { kernelId, type, data });
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  // --- public API -------------------------------------------------------------------------

  /** Creates a kernel; resolves with its id once it is ready. */
  createKernel(options) {
    const json = optionsJson(options, 'kernel options');
    const bad = nonFiniteOption(options);
    if (bad) return Promise.reject(khError('KH_EOPTION', bad));
    return this._request((n, done) => n.createKernel(json, done));
  }

  /**
   * Attaches to the gateway's running kernel `remoteId` (one listRemoteKernels() lists, or one
   * another client started) as a mode "remote" kernel of this manager; resolves with its local
   * id (remoteId unless options.id says otherwise) once it is ready. options: those of a remote
   * createKernel() but mode and remoteId (id, namespace, shutdown: false by default, so that
   * destroying it leaves the remote kernel running).
   */
  connectKernel(remoteId, options) {
    checkId(remoteId, 'remote kernel id');
    const json = optionsJson(options, 'kernel options');
    const bad = nonFiniteOption(options);
    if (bad) return Promise.reject(khError('KH_EOPTION', bad));
    return this._request((n, done) => n.connectKernel(remoteId, json, done));
  }

  /** The gateway's kernels (GET /api/kernels): [{id, name, lastActivity, executionState,
   * connections}], every kernel the gateway runs, whoever started it. Rejects KH_ENOTSUP when
   * the manager has no gateway, KH_EREMOTE, KH_EAUTH, UV_ETIMEDOUT. */
  listRemoteKernels() {
    return this._request((n, done) => n.gatewayList('kernels', done))
      .then((json) => camelKeys(JSON.parse(json)));
  }

  /** The gateway's kernelspecs (GET /api/kernelspecs): {default, kernelspecs: {name: {name,
   * spec: {argv, displayName, language, ...}, resources}}}; the kernelspecs' names are kept as
   * they are. Rejects as listRemoteKernels(). */
  listKernelspecs() {
    return this._request((n, done) => n.gatewayList('kernelspecs', done)).then((json) => {
      const doc = JSON.parse(json);
      const specs = doc.kernelspecs;
      const out = camelKeys({ ...doc, kernelspecs: null });
      out.kernelspecs = {};
      if (specs !== null && typeof specs === 'object') {
        for (const [name, spec] of Object.entries(specs)) {
          Object.defineProperty(out.kernelspecs, name,
            { value: camelKeys(spec), writable: true, enumerable: true, configurable: true });
        }
      }
      return out;
    });
  }

  /** The pool's info once it has settled (manager option pool): {mode, size, waiting, and for
   * a fork server (pool.mode "fork") preload, state, pid, restarts, forked, lastExit, error?}.
   * Rejects KH_ENOTSUP when the manager has no pool, KH_EOPTION when a pool.preload module
   * cannot be imported (the message names it), KH_EWORKER when the fork server cannot start or
   * keeps dying, KH_ECANCELED when the manager closes. A fork server that died is started
   * again: call it again to wait for it. */
  poolReady() {
    return this._request((n, done) => n.poolReady(done))
      .then((json) => camelKeys(JSON.parse(json)));
  }

  /** The Kernel with this id, or undefined when there is none. */
  getKernel(id) {
    checkId(id);
    const mode = this._native.kernelMode(id);
    if (mode === null) {
      this._kernels.delete(id);
      return undefined;
    }
    // One handle per kernel; an id destroyed and created again in the other mode gets a new one.
    let k = this._kernels.get(id);
    if (k === undefined || k.mode !== mode) {
      k = new Kernel(this, id, mode);
      this._kernels.set(id, k);
    }
    return k;
  }

  /** [{id, mode, namespace, status, created, executionCount}], optionally for one namespace. */
  listKernels(namespace) {
    return camelKeys(JSON.parse(this._native.list(checkOptionalNamespace(namespace))));
  }

  /** The kernel's details (id, mode, namespace, status, options, and in worker mode pid,
   * pooled and sandbox layers), or undefined for no such kernel. */
  getKernelInfo(id) {
    checkId(id);
    const json = this._native.info(id);
    return json === null ? undefined : camelKeys(JSON.parse(json));
  }

  /** Destroys a kernel: its pending requests reject with KH_ECANCELED. */
  destroyKernel(id) {
    checkId(id);
    // A later kernel may take the same id: it must not inherit this one's listeners.
    return this._request((n, done) => n.destroy(id, done)).then(() => {
      this._kernels.delete(id);
      this._listeners.delete(id);
      this._exposed.delete(id);
      this._comms.delete(id);
    });
  }

  /** Destroys every kernel (of one namespace); resolves with how many. */
  destroyAll(namespace) {
    const ns = checkOptionalNamespace(namespace);
    return this._request((n, done) => n.destroyAll(ns, done)).then((count) => {
      for (const id of this._kernels.keys()) {
        if (this._native.kernelMode(id) === null) {
          this._kernels.delete(id);
          this._listeners.delete(id);
          this._comms.delete(id);
        }
      }
      for (const id of this._exposed.keys()) {
        if (this._native.kernelMode(id) === null) this._exposed.delete(id);
      }
      return count;
    });
  }

  /**
   * Serves kernel `id` on Jupyter's wire protocol and writes its connection file (mode 0600; by
   * default kernel-kh-<id>.json in Jupyter's runtime directory). options: {connectionFile, ip
   * (default '127.0.0.1'), transport ('tcp' | 'ipc'), key, kernelName, connection (a connection
   * file's content to serve: ports, key, ...), shutdown ('stop' | 'destroy' | 'none')}. Returns
   * the JupyterServer; throws an Error with a code when refused: KH_EOPTION, KH_ENOTFOUND,
   * KH_EEXIST (served already), KH_EKERNELDEAD, KH_ECLOSED, UV_EADDRINUSE, ...
   */
  serveJupyter(id, options) {
    checkId(id);
    const json = optionsJson(options, 'Jupyter server options');
    const bad = nonFiniteOption(options);
    if (bad) throw khError('KH_EOPTION', bad);
    this._checkOpen();
    return new JupyterServer(this, id, json);
  }

  /** Calls listener(data) for each `event` of kernel `id` (KernelEvents.ALL: {type, data}). */
  onKernelEvent(id, event, listener) {
    checkId(id);
    if (typeof event !== 'string') throw new TypeError('event must be a string');
    if (!EVENT_NAMES.has(event)) throw new RangeError(`unknown kernel event "${event}"`);
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let byType = this._listeners.get(id);
    if (byType === undefined) this._listeners.set(id, (byType = new Map()));
    let list = byType.get(event);
    if (list === undefined) byType.set(event, (list = []));
    list.push({ fn: listener, removed: false });
    return this;
  }

  /** Removes a listener (every listener of that event when `listener` is omitted). */
  offKernelEvent(id, event, listener) {
    checkId(id);
    if (typeof event !== 'string') throw new TypeError('event must be a string');
    if (listener !== undefined && typeof listener !== 'function') {
      throw new TypeError('listener must be a function');
    }
    const byType = this._listeners.get(id);
    const list = byType && byType.get(event);
    if (!list) return this;
    const i = listener === undefined ? 0 : list.findIndex((e) => e.fn === listener);
    if (i < 0) return this;
    const removed = listener === undefined ? list.splice(0) : list.splice(i, 1);
    for (const e of removed) e.removed = true;
    if (list.length === 0) byType.delete(event);
    if (byType.size === 0) this._listeners.delete(id);
    return this;
  }

  /** Keeps the process alive while kernels exist (as libuv's uv_ref). */
  ref() {
    this._native.ref(true);
    return this;
  }

  /** The default: only requests in flight keep the process alive. */
  unref() {
    this._native.ref(false);
    return this;
  }

  /** Destroys every kernel (pending requests reject KH_ECANCELED), stops its Jupyter servers
   * (each emits 'stopped' before this resolves) and releases the manager. */
  close() {
    // Idempotent: every later call (and every other method, through _checkOpen) sees this
    // promise, so a second close waits for the same completion.
    if (this._closePromise === null) {
      this._closePromise = new Promise((resolve, reject) => {
        try {
          this._native.close(() => resolve());
        } catch (err) {
          reject(err);
        }
      }).then(() => {
        this._kernels.clear();
        this._listeners.clear();
        this._exposed.clear();
        this._comms.clear();
      });
    }
    return this._closePromise;
  }
}

// The core hands out snake_case JSON (Jupyter's style); the API shapes of this module are
// camelCase. camelKeys() is the one place that converts. The values of these keys keep the shape
// they came in: `env` holds the user's own variable names; `data` and `metadata` are MIME bundles;
// an execute reply's `result` and `error` are Jupyter content and its `outputs` are event records,
// which stay snake_case as every event payload does (`execution_state`, `reason.exit_code`).
const AS_IS = new Set(['env', 'data', 'metadata', 'result', 'error', 'outputs']);

function camelKeys(value) {
  if (Array.isArray(value)) return value.map(camelKeys);
  if (value === null || typeof value !== 'object') return value;
  const out = {};
  for (const [key, v] of Object.entries(value)) {
    out[key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase())] = AS_IS.has(key) ? v : camelKeys(v);
  }
  return out;
}

// {status, executionCount, result?, error?, outputs}; each output's data is tagged as the same
// event was when listeners saw it.
function toResult(kernelId, executionId, json, bufs) {
  const r = camelKeys(applyBuffers(JSON.parse(json), bufs));
  if (r.outputs === undefined) r.outputs = []; // replies for requests that never ran
  for (const o of r.outputs) {
    if (o.data !== null && typeof o.data === 'object') {
      o.data.kernelId = kernelId;
      o.data.executionId = executionId;
    }
  }
  return r;
}

module.exports = {
  KernelManager,
  Kernel,
  Comm,
  JupyterServer,
  KernelMode,
  KernelEvents,
  ErrorCodes,
};
