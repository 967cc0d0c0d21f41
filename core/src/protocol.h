/* protocol.h: the worker protocol, written down once: every message the host and a
 * kernelhost-worker exchange, its fields and the order they may come in. Both ends (the host's
 * worker backend, core/worker/main.c) and the fuzzer (tests/fuzz/) use these names. Internal
 * declarations live in internal.h (STYLE.md); this header is the one exception, because it is
 * the contract between two programs rather than part of the library, and internal.h includes
 * it. The tables behind it are in protocol.c. Thread: any (the tables are constant).
 *
 * Framing (frame.c): a 4-byte big-endian length, then that many bytes of one JSON object (UTF-8)
 * whose member "t" names the message. Host -> worker frames travel on the worker's fd 3 (which
 * it moves above 10 at start), worker -> host frames on its fd 4; fds 1 and 2 belong to user
 * code and are captured as "stream" events. The payload of "ev" and "reply" is the member
 * "data", written last, so that the host can take it as the validated text it arrived as
 * instead of building it (a 1 MB image costs 16 ms to build with jansson, 0.8 ms to validate).
 *
 * Binary values travel beside the JSON, never as base64 (kh_buffer_t): a message with member
 * "bufs" (an array of 1 to KH__FRAME_BUFS_MAX JSON Pointers into its "data", each leading to a
 * null there) is followed at once by one binary frame per path, in order: a 4-byte big-endian
 * length with its top bit set (KH__FRAME_BINARY; a JSON frame's never is), then that many raw
 * bytes. The decoder hands the message out only with all of them (frame.c); a binary frame
 * anywhere else, or a path that does not lead to a null in "data", is a protocol error.
 *
 * The order, for one worker process:
 *
 *     host                                                 worker
 *      |  spawn: fds 3 and 4 are the protocol pipes          |
 *      |<--------------------------------------------- hello |  once, Python is up; a pooled
 *      |                                                     |  worker now waits, unconfined,
 *      | open ---------------------------------------------->|  single-threaded, for "open"
 *      |<----------------------------------- ev (id "") ...  |  fd 1/2 output while opening
 *      |<--------------------------------------------- ready |  once; with "error" it exits
 *      | exec (id) or comm (id) ---------------------------->|  one at a time: the next one
 *      |   interrupt (id), input ------------------------->  |  only after reply (id)
 *      |<---------------------------------- ev (id) ...      |  the running cell's events
 *      |<--------------------------------------- reply (id)  |
 *      |<------------------- ev (id "" or an earlier id) ... |  threads a cell started go on
 *      | expose (names) ------------------------------------>|  after ready, and whenever the
 *      |                                                     |  exposed host functions change
 *      |<------------------------------- call (id, name) ... |  a thread waits for its answer;
 *      | result (id) --------------------------------------->|  any number in flight, each
 *      |                                                     |  answered once (or never: an
 *      |                                                     |  interrupt, restart or death
 *      |                                                     |  canceled it on the host)
 *      |<--------------------------------------------- fatal |  at any time; then it exits
 *
 * The host treats every worker frame as hostile: a cell can write to any descriptor of its own
 * process, the protocol pipe included. A frame the table below does not allow (unknown member,
 * wrong type, out of phase, a reply for a request that is not running, an event naming an id
 * the host never gave this process) is a protocol error: the host kills that worker and
 * reports it dead with the reason; nothing else is affected (worker-proc.c). The worker in
 * turn checks the host's frames and exits on anything else ("fatal").
 *
 * The messages and their members ("?": optional; protocol.c holds the same as a table):
 *   HELLO     worker -> host  pid: int, python: string (its version)
 *   OPEN      host -> worker  id: string (the kernel id), env?: {string: string},
 *                             cwd?: string, sandbox?: object (sandbox.c's plan),
 *                             figure_formats?: [string] (the kernel option, for _kh_mpl),
 *                             binary?: string ("base64": the kernel option binary; absent:
 *                             binary values go as binary frames)
 *   READY     worker -> host  sandbox?: object ({layers, missing}, what was applied), or
 *                             error: string and code?: int (KH_ENOTSUP: cannot confine)
 *   EXEC      host -> worker  id: string (the execution id), code: string, silent: bool,
 *                             store_history: bool, allow_stdin: bool (false: the cell's
 *                             input(), getpass and sys.stdin reads raise
 *                             StdinNotImplementedError and send no input_request)
 *   EV        worker -> host  type: string (an event name other than "status", which only the
 *                             host reports), id: string ("" for no request), data: object,
 *                             bufs?: [string] (its binary values, see above)
 *   REPLY     worker -> host  id: string (the running request's), data: object (the reply),
 *                             bufs?: [string]
 *   INTERRUPT host -> worker  id: string (the cell to interrupt, if it still runs)
 *   INPUT     host -> worker  value: string (the answer to the last input_request;
 *                             the only string that may hold NULs)
 *   FATAL     worker -> host  message: string (why it is about to exit), module?: string (a
 *                             template's preload that failed to import)
 *   INTERACT  host -> worker  id: string (the editor request's), op: string ("complete",
 *                             "inspect", "is_complete", "kernel_info"), content: object
 *                             (Jupyter's request content), timeout_ms: int. Any time once
 *                             ready, during a cell too; the worker's interact thread serves
 *                             them (py-interact.c), each answered once, in any order:
 *   ANSWER    worker -> host  id: string (an INTERACT's not yet answered), status?: int (0, or
 *                             a KH_E* / UV_ETIMEDOUT code), data: object (the reply content,
 *                             or {message} with a status)
 *   CANCEL    host -> worker  id: string (an INTERACT's): stop its work (an interrupt,
 *                             restart or destroy canceled it on the host); it is answered all
 *                             the same (KH_ECANCELED, or what it had), and the host drops that
 *   EXPOSE    host -> worker  names: [string] (every host function exposed to the kernel now;
 *                             [] when none is left). Sent once ready when any is exposed, and
 *                             on each change; a kernel that never had one never gets it, and
 *                             its Python then sends no CALL: there is no bridge at all.
 *   CALL      worker -> host  id: int (>= 1, greater than every earlier CALL's of this
 *                             process), name: string, cell: bool (made by the thread that runs
 *                             cells, whose call an interrupt cancels), args: [any] (the
 *                             positional arguments), bufs?: [string] (their binary values, as
 *                             for EV, paths into args). Once ready, at any time, from any thread.
 *                             An id that is not new is a protocol error; a name the host does
 *                             not expose is answered with an error, since a name may have been
 *                             withdrawn while the call was on its way.
 *   RESULT    host -> worker  id: int (a CALL's), and value: any (the answer; bufs?: [string],
 *                             its binary values, paths into value) or error: string (the host
 *                             function's failure: Python raises HostError). The worker drops a
 *                             RESULT for a call it no longer waits for.
 *   COMM      host -> worker  id: string (the comm message's execution id), msg_type: string
 *                             ("comm_open", "comm_msg", "comm_close"), content: object
 *                             (Jupyter's content, checked by the host: comm.c), bufs?: [string]
 *                             (its buffers, "/buffers/0" ... in order: JSON Pointers into
 *                             "content", not "data"). A request like EXEC, in the same
 *                             one-at-a-time order: the kernel's comm manager handles it on the
 *                             main thread (_kh_comm), its handlers' events carry its id, and it
 *                             ends with a REPLY ({status})
 *   FORK      host -> template  seq: int (the host's number for this request): fork a worker;
 *                             pooled?: bool (for the pool, not a waiting kernel: it gets ready
 *                             ahead of need before its "hello": as root, an empty network
 *                             namespace), pids_cgroup?: string (pooled, as root: the directory in
 *                             which it makes and joins its group w-<pid>, so that a kernel's
 *                             limits.maxProcesses later only sets pids.max)
 *   FORKED    template -> host  seq: int (a FORK's, answered in order), pid?: int (the new
 *                             worker's), error?: string (why there is none). With pid, the
 *                             frame carries two descriptors (SCM_RIGHTS): the write end of the
 *                             worker's command pipe, then the read end of its frame pipe.
 *
 * The fork server (manager option pool.mode "fork", worker-pool.c): one template process,
 * `kernelhost-worker --kernelhost-template PARENT_PID [MODULE...]`, whose fd 3 is one Unix
 * socket for both directions. It starts Python, imports the runtime and the modules named,
 * freezes the heap (gc.freeze) and then, single-threaded for good, forks workers on request:
 *
 *     host                                                 template
 *      |<--------------------------------------------- hello |  Python up, modules imported
 *      |<--------------------------------------------- fatal |  or why not (module?: the
 *      |                                                     |  preload that failed); exits
 *      | fork (seq) ---------------------------------------->|  any number, answered in order
 *      |<------------------------------- forked (seq, pid) + 2 fds
 *
 * Each worker is made with clone(CLONE_PARENT): it is the host's child, as a spawned worker is
 * (the host reaps it, its parent-death signal follows the host, and the template's death takes
 * no kernel with it). It starts in its own session on the two pipes it was given, then speaks
 * the protocol above from "hello" on, exactly as a spawned worker does. */
#ifndef KH_PROTOCOL_H
#define KH_PROTOCOL_H

#include <stddef.h>

#include <jansson.h>

#define KH__PROTO_MESSAGES(X)                \
  X(HELLO, "hello", KH__P_TO_HOST)           \
  X(OPEN, "open", KH__P_TO_WORKER)           \
  X(READY, "ready", KH__P_TO_HOST)           \
  X(EXEC, "exec", KH__P_TO_WORKER)           \
  X(EV, "ev", KH__P_TO_HOST)                 \
  X(REPLY, "reply", KH__P_TO_HOST)           \
  X(INTERRUPT, "interrupt", KH__P_TO_WORKER) \
  X(INPUT, "input", KH__P_TO_WORKER)         \
  X(FATAL, "fatal", KH__P_TO_HOST)           \
  X(INTERACT, "interact", KH__P_TO_WORKER)   \
  X(ANSWER, "answer", KH__P_TO_HOST)         \
  X(CANCEL, "cancel", KH__P_TO_WORKER)       \
  X(EXPOSE, "expose", KH__P_TO_WORKER)       \
  X(CALL, "call", KH__P_TO_HOST)             \
  X(RESULT, "result", KH__P_TO_WORKER)       \
  X(COMM, "comm", KH__P_TO_WORKER)           \
  X(FORK, "fork", KH__P_TO_WORKER)           \
  X(FORKED, "forked", KH__P_TO_HOST)

/* Which way a message travels. */
typedef enum { KH__P_TO_WORKER = 1, KH__P_TO_HOST = 2 } kh__pdir_t;

/* A message kind; 0 is no message (an unknown "t"). */
typedef enum {
  KH__P_NONE = 0,
#define KH__P_ENUM_(name, t, dir) KH__P_##name,
  KH__PROTO_MESSAGES(KH__P_ENUM_)
#undef KH__P_ENUM_
      KH__P_COUNT_
} kh__pmsg_t;

/* The longest string the protocol's ids may hold (without the NUL): the sizes of the host's
 * buffers for them (internal.h's KH__ID_MAX and KH__EXEC_ID_MAX), checked here so that no id
 * is ever cut short, which could make two different ids compare equal. */
#define KH__P_KERNEL_ID_MAX 63
#define KH__P_EXEC_ID_MAX 39
/* The longest name of a host function (internal.h's KH__HOSTFN_NAME_MAX). */
#define KH__P_HOSTFN_NAME_MAX 64

/* The wire name of a kind ("hello"), or NULL. */
const char *kh__proto_name(kh__pmsg_t kind);
/* The kind a wire name stands for, or KH__P_NONE. */
kh__pmsg_t kh__proto_kind(const char *name);
/* Checks a decoded frame (frame.c) against the table: "t" names a message that travels in
 * direction `dir`, every member is one the message has, with its type, and every required one
 * is there. `data_split`: the frame's "data" payload was taken apart by the decoder (it is
 * then validated as an object already, and absent from msg). Returns the kind, or KH__P_NONE
 * with a reason in why (n bytes). This is shape only: which message may come when is the
 * reader's business (worker-proc.c on the host, main.c in the worker). */
kh__pmsg_t kh__proto_check(const json_t *msg, kh__pdir_t dir, int data_split, char *why, size_t n);

#endif /* KH_PROTOCOL_H */
