/* py-internal.h: what the py-*.c files share; includes Python.h, so only they include it. */
#ifndef KH_PY_INTERNAL_H
#define KH_PY_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "internal.h"

/* How _kernelhost.emit() delivers an event: to a sink in the host process, to the protocol
 * pipe in a worker. Called with the GIL held; must not wait for anything that may need it. */
typedef int (*kh__py_emit_fn)(PyObject *sink, const char *exec_id, int type, const char *data,
                              size_t len);
extern kh__py_emit_fn kh__py_emit_hook;
/* Called by _kernelhost.note_interrupt(), which a worker's SIGINT handler calls. */
extern void (*kh__py_interrupt_hook)(void);

/* The builtin module _kernelhost; register with PyImport_AppendInittab before init. */
PyObject *kh__py_init_module(void);

/* Adds OutBuffer and Writer (py-stream.c) to the _kernelhost module. Returns 0 or -1. */
int kh__py_stream_add_types(PyObject *module);

/* Installs the finder for the embedded runtime modules and imports _kh_runtime, calling its
 * init(signals_work). Needs the GIL. Returns 0 or -1 with a Python error set. */
int kh__py_load_runtime(int signals_work);

/* Describes the current Python exception into buf (and clears it). Needs the GIL. */
void kh__py_describe_error(char *buf, size_t n);

/* A reply for a runtime failure, as JSON (owned). */
char *kh__py_error_reply(const char *ename, const char *evalue, size_t *out_len);

/* Promotes libpython to RTLD_GLOBAL, so C extensions (numpy) resolve Py* symbols even when
 * kernelhost itself was loaded RTLD_LOCAL (Node addons, Lua modules). */
void kh__py_promote_libpython(void);

/* Fills the isolated configuration kernelhost uses everywhere. */
PyStatus kh__py_config(PyConfig *config);
#endif
