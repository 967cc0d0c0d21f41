/* py-internal.h: what the py-*.c files share; includes Python.h, so only they (and the worker
 * executable, core/worker/main.c) include it. */
#ifndef KH_PY_INTERNAL_H
#define KH_PY_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "internal.h"

/* Set by kh__py_start() from its kh__py_start_t (internal.h). */
extern kh__py_emit_fn kh__py_emit_hook;
extern void (*kh__py_interrupt_hook)(void);

/* The builtin module _kernelhost; register with PyImport_AppendInittab before init. */
PyObject *kh__py_init_module(void);

/* Adds OutBuffer and Writer (py-stream.c) to the _kernelhost module. Returns 0 or -1. */
int kh__py_stream_add_types(PyObject *module);

/* Adds Gate (py-gate.c: when interrupts may land in a kernel's thread). Returns 0 or -1. */
int kh__py_gate_add_type(PyObject *module);

/* A host call's wait on a kernel's own thread (py-hostcall.c): between begin and end the Gate's
 * interrupt wakes w (kh__hcwait_interrupt) instead of raising an asynchronous exception, which
 * would land only after the host answered. begin returns -1, and registers nothing, when an
 * interrupt of the cell is due already (then raise KeyboardInterrupt); w NULL only checks that.
 * Both do nothing on a thread that is not the gate's. GIL held. */
int kh__py_gate_wait_begin(PyObject *gate, kh__hcwait_t *w);
void kh__py_gate_wait_end(PyObject *gate);

/* Adds host_names, host_exposed and hostcall (py-hostcall.c) to _kernelhost. Returns 0 or -1. */
int kh__py_hostcall_add_functions(PyObject *module);
/* Set by kh__py_start() from kh__py_start_t.hostcall (a worker's; NULL in the host). */
extern int (*kh__py_hostcall_hook)(int cell, const char *name, const char *args, size_t len,
                                   const kh_buffer_t *buffers, size_t nbuffers, int *state,
                                   char **text, size_t *text_len, kh_buffer_t **out_buffers,
                                   size_t *out_nbuffers);
/* A worker's exposed names (an array of strings, from "expose"). Thread: any, no GIL needed. */
void kh__py_set_host_names(const json_t *names);

/* Describes the current Python exception into buf (and clears it). Needs the GIL. */
void kh__py_describe_error(char *buf, size_t n);

/* A tuple of the strings of a JSON array (new reference), None for NULL, or NULL with a Python
 * exception set. Needs the GIL. */
PyObject *kh__py_strings(const json_t *array);

/* Reads a sequence of (path, bytes-like) pairs (None: none) into views[] (KH__FRAME_BUFS_MAX
 * of them), holding each object's buffer in held[] until the caller releases it with
 * PyBuffer_Release. Returns the count, or -1 with a Python exception set. Needs the GIL. */
Py_ssize_t kh__py_read_buffers(PyObject *seq, kh_buffer_t *views, Py_buffer *held);

/* A runtime's reply: bytes (JSON), or (bytes, buffers) when it has binary values. Points *data
 * into it and fills views/held as kh__py_read_buffers does. Returns the buffer count, or -1
 * (not a reply: no exception is set). Needs the GIL. */
Py_ssize_t kh__py_reply_parts(PyObject *r, const char **data, size_t *len, kh_buffer_t *views,
                              Py_buffer *held);

/* A reply for a runtime failure, as JSON (owned). */
char *kh__py_error_reply(const char *ename, const char *evalue, size_t *out_len);

/* The interact thread (py-interact.c): serves one editor request with the GIL, on a thread of
 * its own, and calls done(ctx, id, status, text, len) there: status 0 and the reply content
 * (JSON), or a KH_E* / UV_ETIMEDOUT code and a message (text may be NULL). rt points at the
 * runtime Kernel, read with the GIL (NULL: the kernel closed: KH_EKERNELDEAD). Returns 0 or
 * KH_ENOMEM / KH_EPYTHON (the thread could not start), and then done never runs. Thread: any. */
typedef void (*kh__pyi_done_fn)(void *ctx, const char *id, int status, const char *text,
                                size_t len);
int kh__pyi_submit(PyObject **rt, void *ctx, kh__pyi_done_fn done, const char *id, const char *op,
                   const char *content, size_t len, uint64_t timeout_ms);
/* Stops request `id` if it is still queued or running (its done then gets KH_ECANCELED; one
 * that already ended is left alone). Never waits for the GIL. Thread: any. */
void kh__pyi_cancel(const char *id);

#endif
