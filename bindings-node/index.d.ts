// index.d.ts: types for every public name of require("kernelhost") / import "kernelhost".
import { EventEmitter } from 'node:events';

export declare const KernelMode: Readonly<{
  MAIN_THREAD: 'main_thread'; WORKER: 'worker'; REMOTE: 'remote';
}>;
export type KernelModeValue = (typeof KernelMode)[keyof typeof KernelMode];

export declare const KernelEvents: Readonly<{
  STREAM: 'stream';
  DISPLAY_DATA: 'display_data';
  UPDATE_DISPLAY_DATA: 'update_display_data';
  EXECUTE_RESULT: 'execute_result';
  EXECUTE_ERROR: 'execute_error';
  CLEAR_OUTPUT: 'clear_output';
  INPUT_REQUEST: 'input_request';
  STATUS: 'status';
  COMM_OPEN: 'comm_open';
  COMM_MSG: 'comm_msg';
  COMM_CLOSE: 'comm_close';
  ALL: '*';
}>;
export type KernelEventName = (typeof KernelEvents)[keyof typeof KernelEvents];
export type KernelEventType = Exclude<KernelEventName, '*'>;

/** Every error code (`err.code`) the core reports, with its numeric value. */
export declare const ErrorCodes: Readonly<Record<KernelErrorCode, number>>;
export type KernelErrorCode =
  | 'KH_EINVAL' | 'KH_ENOTFOUND' | 'KH_ECLOSED' | 'KH_ECANCELED' | 'KH_EKERNELDEAD'
  | 'KH_ENOTSUP' | 'KH_EEXIST' | 'KH_ENOMEM' | 'KH_EPYTHON' | 'KH_EENCODING'
  | 'KH_ETOOBIG' | 'KH_EOPTION' | 'KH_EBUSY' | 'KH_EPROTO' | 'KH_EWORKER' | 'KH_EREMOTE'
  | 'KH_EAUTH';

/** The Error that API failures reject (or throw) with. */
export interface KernelError extends Error {
  code: KernelErrorCode | string;
}

/** MIME type -> value (strings; binary types base64, as Jupyter does). */
export type MimeBundle = Record<string, any>;

interface EventTags {
  kernelId: string;
  /** The request the event belongs to ("" for none, e.g. "starting"). */
  executionId: string;
}
export interface StreamData extends EventTags { name: 'stdout' | 'stderr'; text: string }
export interface DisplayData extends EventTags {
  data: MimeBundle;
  metadata: Record<string, any>;
  transient?: { display_id?: string };
}
export interface ExecuteResultData extends EventTags {
  execution_count: number;
  data: MimeBundle;
  metadata: Record<string, any>;
}
export interface ExecuteErrorData extends EventTags {
  ename: string;
  evalue: string;
  traceback: string[];
}
export interface ClearOutputData extends EventTags { wait: boolean }
export interface InputRequestData extends EventTags { prompt: string; password: boolean }
/** Why a worker kernel died or is being restarted. Like every event payload field it keeps
 * Jupyter's snake_case; fields that do not apply are null or absent. */
export interface StatusReason {
  exit_code?: number | null;
  /** "SIGSEGV", ... */
  signal?: string | null;
  signal_number?: number;
  pid?: number;
  message?: string;
  /** "interrupt_timeout" when an interrupt did not land within interruptGraceMs. */
  cause?: string;
}
export interface StatusData extends EventTags {
  execution_state: 'starting' | 'busy' | 'idle' | 'restarting' | 'dead';
  /** On "dead" and "restarting". */
  reason?: StatusReason;
}

/** A comm event (Jupyter's content, the message's metadata beside it), sent by Python's
 * `comm` package; an event of the request whose code sent it. */
export interface CommData extends EventTags {
  comm_id: string;
  data: Record<string, any>;
  metadata: Record<string, any>;
  /** The message's binary buffers (base64 strings with the kernel option binary: "base64"). */
  buffers?: Array<Buffer | string>;
}
/** What the host's comm buffers may be. */
export type CommBuffer = Buffer | ArrayBufferView | ArrayBuffer;
export interface CommOpenData extends CommData { target_name: string; target_module?: string }

export interface EventDataMap {
  stream: StreamData;
  display_data: DisplayData;
  update_display_data: DisplayData;
  execute_result: ExecuteResultData;
  execute_error: ExecuteErrorData;
  clear_output: ClearOutputData;
  input_request: InputRequestData;
  status: StatusData;
  comm_open: CommOpenData;
  comm_msg: CommData;
  comm_close: CommData;
}

/** One event as `*` listeners, `outputs` and executeStream() see it. */
export type KernelEventRecord = {
  [T in KernelEventType]: { type: T; data: EventDataMap[T] };
}[KernelEventType];

export interface ManagerEvent {
  kernelId: string;
  type: KernelEventType;
  data: EventDataMap[KernelEventType];
}

export interface ExecuteResult {
  status: 'ok' | 'error' | 'aborted';
  executionCount: number;
  result?: { data: MimeBundle; metadata: Record<string, any> };
  error?: { ename: string; evalue: string; traceback: string[] };
  /** Every event of the request, in order. */
  outputs: KernelEventRecord[];
}

export interface ExecuteOptions {
  /** No execute_result, no history, counter unchanged (default false). */
  silent?: boolean;
  /** Count the cell and set `_` (default true). */
  storeHistory?: boolean;
  /** Queued requests of this kernel are aborted after an error (default true). */
  stopOnError?: boolean;
  /** Interrupt the cell after this many ms (default 0: no limit). */
  timeout?: number;
  /** false: input(), getpass and sys.stdin reads in the cell (and in threads it starts) raise
   * StdinNotImplementedError and no input_request event is sent, as with Jupyter's allow_stdin
   * false (default true). */
  allowStdin?: boolean;
}

export interface KernelOptions {
  mode?: KernelModeValue;
  id?: string;
  namespace?: string;
  maxExecutionTime?: number;
  /** main_thread only: "host" runs cells on the calling (JS) thread itself: the lowest latency,
   * but the event loop waits for each cell and nothing can interrupt it; "kernel" (default). */
  thread?: "kernel" | "host";
  inactivityTimeout?: number;
  filesystem?: { enabled?: boolean; root?: string; mountPoint?: string; readOnly?: boolean };
  env?: Record<string, string>;
  cwd?: string;
  permissions?: { read?: string[]; write?: string[]; net?: string[]; env?: string[];
    run?: string[] };
  limits?: Record<string, number>;
  autoRestart?: boolean;
  /** The formats matplotlib figures are sent in, as Jupyter's InlineBackend.figure_formats
   * (default ["png"]; "retina"/"png2x": PNG at twice the dpi, with width/height metadata). */
  figureFormats?: Array<"png" | "png2x" | "retina" | "jpg" | "jpeg" | "svg" | "pdf">;
  /** mode "remote": the gateway's kernelspec (default the gateway's kernelName, "python3"). */
  kernelName?: string;
  /** mode "remote": attach to the gateway's running kernel with this id instead of starting one
   * (manager.connectKernel(remoteId) says the same). */
  remoteId?: string;
  /** mode "remote": destroying the kernel shuts the remote kernel down (default true for a
   * kernel this manager started, false for one it attached to). */
  shutdown?: boolean;
  [option: string]: unknown;
}

/** The manager option `gateway`: the Jupyter Server / Kernel Gateway / Enterprise Gateway that
 * mode "remote" kernels run on. Keys not given come from KERNELHOST_GATEWAY_URL,
 * KERNELHOST_GATEWAY_TOKEN, KERNELHOST_GATEWAY_KERNEL_NAME and KERNELHOST_GATEWAY_HEADERS (a
 * JSON object) when they are set. */
export interface GatewayOptions {
  /** "http://host:port/base" or "https://...". */
  url?: string;
  /** Sent as "Authorization: token ..."; never shown in errors, info or logs. */
  token?: string;
  /** Added to every request. */
  headers?: Record<string, string>;
  /** Default true. */
  validateCert?: boolean;
  /** The kernelspec remote kernels start with (default "python3"). */
  kernelName?: string;
  /** ms: TCP + TLS connect (default 40000). */
  connectTimeout?: number;
  /** ms: a whole REST request (default 42000). */
  requestTimeout?: number;
  /** ms: how long a dropped WebSocket is retried before the kernel is reported dead (default
   * 30000). */
  reconnectTimeout?: number;
}

/** A kernel the gateway runs (GET /api/kernels), keys in camelCase. */
export interface RemoteKernel {
  id: string;
  name: string;
  lastActivity?: string;
  executionState?: string;
  connections?: number;
  [key: string]: unknown;
}

/** The gateway's kernelspecs (GET /api/kernelspecs): keys in camelCase, the kernelspecs' names
 * as they are. */
export interface Kernelspecs {
  default: string;
  kernelspecs: Record<string, {
    name: string;
    spec: { argv?: string[]; displayName: string; language: string; interruptMode?: string;
      env?: Record<string, string>; metadata?: Record<string, any>; [key: string]: unknown };
    resources: Record<string, string>;
  }>;
}

export interface ManagerOptions {
  maxCodeBytes?: number;
  interruptGraceMs?: number;
  workerPath?: string;
  /** Worker processes made ahead of need. mode "spawn" (the default): `size` workers spawned
   * and waiting. mode "fork": a fork server, one template process that imports the runtime and
   * `preload` (module names such as "numpy" or "matplotlib.pyplot") and forks a worker per
   * kernel, `size` (default 1) kept forked and waiting. poolReady() says when it is up. */
  pool?: { size?: number; mode?: 'spawn' | 'fork'; preload?: string[] };
  /** Where mode "remote" kernels run. */
  gateway?: GatewayOptions;
  [option: string]: unknown;
}

/** manager.poolReady(): what the pool is doing, keys in camelCase. */
export interface PoolInfo {
  mode: 'spawn' | 'fork';
  size: number;
  /** Workers made and waiting to be claimed. */
  waiting: number;
  /** Fork server: the modules the template imported. */
  preload?: string[];
  /** Fork server: "ready" once poolReady() resolves. */
  state?: 'off' | 'starting' | 'ready' | 'restarting' | 'failed';
  /** Fork server: the template's process id (null until it is up). */
  pid?: number | null;
  /** Fork server: templates started after the first (after one died). */
  restarts?: number;
  /** Fork server: workers the templates forked. */
  forked?: number;
  /** Fork server: how the last template died ("the fork server (pid 12) was killed by
   * SIGKILL", ...), or null. */
  lastExit?: string | null;
  /** Fork server: why it failed, when it did. */
  error?: string;
}

export interface KernelInfo {
  id: string;
  mode: KernelModeValue;
  namespace: string;
  status: string;
  created: number;
  executionCount: number;
}

/** getKernelInfo(): camelCase throughout, but `options.env` keeps the variable names given. */
export interface KernelDetails extends KernelInfo {
  /** The kernel's options as the core normalised them. */
  options: KernelOptions;
  /** Remote mode: the gateway's kernel (its id, the server's kernel id) and the gateway's URL
   * (never its token). */
  remote?: { id: string; [key: string]: unknown };
  /** Worker mode: the process id, and whether it was claimed from the warm pool. */
  pid?: number;
  pooled?: boolean;
  /** Worker mode: where its process came from: forked by the fork server, claimed from the
   * warm pool, or spawned cold. */
  origin?: 'fork' | 'warm' | 'cold';
  /** Worker mode, sandboxed kernels: the layers the running worker reports as active. */
  sandbox?: {
    mode: 'strict' | 'best-effort';
    layers: Record<string, boolean>;
    missing: string[];
    runtimeRead: string[];
    runtimeReadWrite: string[];
  };
}

/** A value a host function receives from Python or answers with: None <-> null, bool, int <->
 * number (BigInt beyond 2^53; an answer may be a BigInt within int64), float <-> number, str
 * <-> string, bytes <-> Buffer (any typed array, DataView or ArrayBuffer answers as bytes),
 * list <-> array, dict <-> plain object. `undefined` answers None (and is left out of objects).
 * NaN, Infinity, functions, symbols, cycles, Dates, Maps, Sets and Promises inside a value make
 * the call raise kernelhost.HostError in Python, naming what and where. */
export type HostValue =
  | null | boolean | number | bigint | string | Buffer | HostValue[]
  | { [key: string]: HostValue };

/** A function a kernel calls as `kernelhost.host.<name>(...args)`. A throw or a rejected
 * Promise raises kernelhost.HostError(message) in Python. */
export type HostFunction = (...args: any[]) =>
  HostValue | undefined | ArrayBufferView | ArrayBuffer | PromiseLike<unknown>;

/**
 * The host's side of a Jupyter comm (kernel.openComm, kernel.comm). 'msg' and 'close' get the
 * payload of the kernel's comm_msg / comm_close events for this comm. send() and close() return
 * once the message is queued (queued like a cell: the kernel's answers are comm events) and throw
 * an Error with a code when it is refused: KH_ECLOSED when the comm is not open (closed by either
 * side, never opened, or gone with a restart), KH_EINVAL, KH_ENOTFOUND.
 */
export declare class Comm extends EventEmitter {
  readonly kernel: Kernel;
  readonly commId: string;
  /** The target it was opened with; undefined for a Comm from kernel.comm(id). */
  readonly targetName: string | undefined;
  send(data?: Record<string, any>,
    options?: { metadata?: Record<string, any>; buffers?: CommBuffer[] }): void;
  /** Sends comm_close; 'close' is emitted for the kernel's close only. */
  close(data?: Record<string, any>,
    options?: { metadata?: Record<string, any>; buffers?: CommBuffer[] }): void;
  on(event: 'msg' | 'close', listener: (data: CommData) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

export declare class Kernel {
  readonly id: string;
  readonly mode: KernelModeValue;
  execute(code: string, options?: ExecuteOptions): Promise<ExecuteResult>;
  /** Yields each event of the request, then its result. */
  executeStream(code: string, options?: ExecuteOptions):
    AsyncIterableIterator<KernelEventRecord | ExecuteResult>;
  interrupt(): Promise<void>;
  inputReply(value: string): Promise<void>;
  restart(): Promise<void>;
  /** Exposes fn to this kernel as kernelhost.host.<name> (replacing one of that name); null
   * withdraws it. Throws KH_EINVAL (not a Python identifier), KH_ENOTFOUND, KH_ECLOSED. */
  expose(name: string, fn: HostFunction | null): this;
  /** Completions at cursorPos (Unicode code points; default the end): Jupyter's complete_reply. */
  complete(code: string, cursorPos?: number, options?: { timeout?: number }): Promise<{
    status: string; matches: string[]; cursorStart: number; cursorEnd: number;
    metadata: { _jupyter_types_experimental?: Array<{ start: number; end: number; text: string; type: string; signature: string }> };
  }>;
  /** Help on the name at cursorPos: Jupyter's inspect_reply (detailLevel 1 adds the source). */
  inspect(code: string, cursorPos?: number, detailLevel?: 0 | 1, options?: { timeout?: number }): Promise<{
    status: string; found: boolean; data: Record<string, string>; metadata: Record<string, unknown>;
  }>;
  /** Whether Enter should run the code: Jupyter's is_complete_reply. */
  isComplete(code: string, options?: { timeout?: number }): Promise<{
    status: 'complete' | 'incomplete' | 'invalid' | 'unknown'; indent?: string;
  }>;
  /** Jupyter's history_request ({histAccessType: 'tail' | 'range' | 'search', n, session, start, stop, pattern, unique, output}); with output: true each entry is [session, line, [input, output | null]]. */
  history(request: Record<string, unknown>): Promise<{ status: string; history: Array<[number, number, string] | [number, number, [string, string | null]]> }>;
  /** Jupyter's kernel_info_reply content, keys in camelCase. */
  kernelInfo(options?: { timeout?: number }): Promise<Record<string, unknown>>;
  /** Opens a comm with the target Python registered (comm.get_comm_manager().register_target);
   * commId defaults to 32 random hex digits. Throws an Error with a code when refused. */
  openComm(targetName: string, data?: Record<string, any>,
    options?: { commId?: string; metadata?: Record<string, any>; buffers?: CommBuffer[] }): Comm;
  /** The Comm of comm `commId` (opened by the kernel or the host): the same object while it is
   * open. */
  comm(commId: string): Comm;
}

/** The content of a Jupyter connection file, keys as Jupyter writes them. */
export interface JupyterConnection {
  transport: 'tcp' | 'ipc';
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: 'hmac-sha256';
  kernel_name?: string;
  [key: string]: unknown;
}

/** manager.serveJupyter() options (camelCase or snake_case keys; the core checks them: an
 * unknown key or a wrong type throws an Error with code KH_EOPTION naming it). */
export interface JupyterServeOptions {
  /** Where to write the connection file (mode 0600, removed when the server stops). Default,
   * unless `connection` is given: <Jupyter's runtime dir>/kernel-kh-<kernel id>.json, the
   * runtime dir being $JUPYTER_RUNTIME_DIR, else $JUPYTER_DATA_DIR/runtime, else
   * ($XDG_DATA_HOME or ~/.local/share)/jupyter/runtime. */
  connectionFile?: string;
  /** A connection file's content to serve (ports 0 or absent are chosen by the system). */
  connection?: Partial<JupyterConnection>;
  /** Default '127.0.0.1'. */
  ip?: string;
  /** Default 'tcp'. */
  transport?: 'tcp' | 'ipc';
  /** The signing key; default 32 random hex digits from the OS; '' disables signing. */
  key?: string;
  /** Written into the connection file; default 'kernelhost'. */
  kernelName?: string;
  /** What a client's shutdown_request does after its reply: 'stop' (default: restart: true
   * restarts the kernel in place, otherwise the server stops and the kernel keeps running),
   * 'destroy' (as 'stop', and the kernel is destroyed) or 'none' (only the 'shutdown' event). */
  shutdown?: 'stop' | 'destroy' | 'none';
  [option: string]: unknown;
}

export interface JupyterServerInfo {
  kernelId: string;
  /** The file the server wrote (removed once it stopped), or null. */
  connectionFile: string | null;
  connection: JupyterConnection;
  /** Messages accepted. */
  messages: number;
  /** Messages dropped unexecuted: bad signatures, malformed messages. */
  dropped: number;
  stopping: boolean;
}

/**
 * A kernel served on Jupyter's wire protocol (manager.serveJupyter): `jupyter console
 * --existing <connectionFile>`, JupyterLab or jupyter_client attach to it while this process
 * keeps using the kernel; both see every event of the kernel. The server runs on Node's own
 * loop. Like a listening net.Server it keeps the process alive until it stops (there is no
 * unref()), and it stays alive without a reference to it: stop it with stop(), destroyKernel()
 * or manager.close(). Stopping leaves the kernel running.
 */
export declare class JupyterServer extends EventEmitter {
  readonly kernelId: string;
  /** The connection file written, or null (when `connection` was given without a file). */
  readonly connectionFile: string | null;
  /** The connection file's content (the key included). */
  readonly connectionInfo: JupyterConnection;
  /** True once 'stopped' was emitted. */
  readonly stopped: boolean;
  /** The server's counters; after 'stopped', as they were then. */
  info(): JupyterServerInfo;
  /** Stops serving and removes the connection file; resolves on 'stopped'. Every call returns
   * the same Promise (resolved at once when the server stopped already). */
  stop(): Promise<void>;
  /** A client asked for a shutdown (its reply was sent); what follows is the shutdown option's. */
  on(event: 'shutdown', listener: (data: { restart: boolean }) => void): this;
  /** Exactly once, last: the server stopped (stop(), its kernel destroyed, the manager closed,
   * a client's shutdown). */
  on(event: 'stopped', listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

export declare class KernelManager extends EventEmitter {
  constructor(options?: ManagerOptions);
  createKernel(options?: KernelOptions): Promise<string>;
  /** Attaches to the gateway's running kernel `remoteId` as a mode "remote" kernel; resolves
   * with its local id (remoteId unless options.id is given). Destroying it leaves the remote
   * kernel running unless options.shutdown is true. */
  connectKernel(remoteId: string, options?: Omit<KernelOptions, 'mode' | 'remoteId'>):
    Promise<string>;
  /** Every kernel the gateway runs. Rejects KH_ENOTSUP (no gateway), KH_EREMOTE, KH_EAUTH. */
  listRemoteKernels(): Promise<RemoteKernel[]>;
  /** The gateway's kernelspecs. Rejects as listRemoteKernels(). */
  listKernelspecs(): Promise<Kernelspecs>;
  /** Resolves with the pool's info once it has settled (a fork server: once its template is
   * up). Rejects KH_ENOTSUP (no pool), KH_EOPTION (a pool.preload module cannot be imported:
   * the message names it), KH_EWORKER (the fork server cannot start), KH_ECANCELED (close). */
  poolReady(): Promise<PoolInfo>;
  getKernel(id: string): Kernel | undefined;
  listKernels(namespace?: string): KernelInfo[];
  /** Details of one kernel (options; in worker mode pid, pooled, sandbox), or undefined. */
  getKernelInfo(id: string): KernelDetails | undefined;
  /** Pending requests reject with KH_ECANCELED; the kernel's listeners are removed. */
  destroyKernel(id: string): Promise<void>;
  /** Resolves with the number of kernels destroyed. */
  destroyAll(namespace?: string): Promise<number>;
  onKernelEvent<E extends KernelEventType>(id: string, event: E,
    listener: (data: EventDataMap[E]) => void): this;
  onKernelEvent(id: string, event: '*', listener: (event: KernelEventRecord) => void): this;
  offKernelEvent(id: string, event: KernelEventName, listener?: (...args: any[]) => void): this;
  /** Serves kernel `id` on Jupyter's wire protocol and writes its connection file. Throws an
   * Error with a code when refused: KH_EOPTION, KH_ENOTFOUND, KH_EEXIST (served already),
   * KH_EKERNELDEAD, KH_ECLOSED, UV_EADDRINUSE, ...; a TypeError for options that are no object. */
  serveJupyter(id: string, options?: JupyterServeOptions): JupyterServer;
  /** Keep the process alive while kernels exist. */
  ref(): this;
  /** The default: only requests in flight keep the process alive. */
  unref(): this;
  /** Destroys every kernel and stops every Jupyter server ('stopped' comes first). */
  close(): Promise<void>;
  on(event: 'kernelEvent', listener: (event: ManagerEvent) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

declare const kernelhost: {
  KernelManager: typeof KernelManager;
  Kernel: typeof Kernel;
  Comm: typeof Comm;
  JupyterServer: typeof JupyterServer;
  KernelMode: typeof KernelMode;
  KernelEvents: typeof KernelEvents;
  ErrorCodes: typeof ErrorCodes;
};
export default kernelhost;
