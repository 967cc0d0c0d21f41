/* py-gate.c: _kernelhost.Gate, which decides when an interrupt may land in a kernel's own
 * thread. Thread: any thread holding the GIL (call, begin and end on the kernel's own thread).
 *
 * A cell's request has several phases that run user code (the cell, the formatting of its
 * result, the str() of its exception, figures) with the runtime's bookkeeping in between. An
 * interrupt must land in every user phase at once, and in no bookkeeping: a KeyboardInterrupt
 * raised between two phases would escape the runtime and lose the cell's reply. So the runtime
 * runs each user phase through Gate.call(), and interrupts are "armed" only inside it:
 *
 *   interrupt() while armed     -> KeyboardInterrupt raised in the kernel thread now
 *                                  (PyThreadState_SetAsyncExc: at its next bytecode)
 *   interrupt() while disarmed  -> owed ("requested"): the next call() raises it at once
 *   call() returns, its async exception not landed yet (the phase ended first) -> owed too
 *   end()                       -> the cell is over: whatever is owed is dropped
 *
 * Every method is C that neither releases the GIL nor runs Python code between reading and
 * writing the gate's fields, so the GIL alone guards them: an interrupt from the service
 * thread and the end of a phase on the kernel thread cannot interleave. (Python code could:
 * the GIL may switch threads between any two bytecodes.) In a worker, interrupts are SIGINT:
 * the runtime's handler asks signal() whether to raise, so both modes obey the same gate. */
#include "py-internal.h"

typedef struct {
  PyObject_HEAD unsigned long thread; /* the kernel's own thread */
  int in_cell;                        /* between begin() and end() */
  int armed;                          /* a call() runs user code on that thread */
  int requested;                      /* an interrupt of the current cell is owed */
  PyObject *current;                  /* str: the cell between begin() and end(), or NULL */
  PyObject *done;                     /* str: the last cell that ended, or NULL */
  PyObject *pending;                  /* str: a cell interrupted before it began, or NULL */
  kh__hcwait_t *waiter;               /* the host call the kernel's thread waits for, or NULL */
} gate_t;

/* Unicode equality that runs no Python code (exec ids are always str). */
static int same_id(PyObject *a, PyObject *b) {
  return a != NULL && b != NULL && PyUnicode_Check(a) && PyUnicode_Check(b) &&
         PyUnicode_Compare(a, b) == 0;
}

/* Drops an async exception raised for a phase that ended before it landed; returns 1 when
 * there was one. Kernel thread, GIL held. */
static int take_unlanded(gate_t *g) {
  PyThreadState *ts = PyThreadState_Get();
  if (ts->async_exc == NULL) return 0;
  PyThreadState_SetAsyncExc(g->thread, NULL);
  return 1;
}

static int gate_init(gate_t *g, PyObject *args, PyObject *kw) {
  if (!PyArg_ParseTuple(args, ":Gate")) return -1;
  (void)kw;
  g->thread = PyThread_get_thread_ident();
  return 0;
}

static void gate_dealloc(gate_t *g) {
  Py_CLEAR(g->current);
  Py_CLEAR(g->done);
  Py_CLEAR(g->pending);
  Py_TYPE(g)->tp_free((PyObject *)g);
}

static int own_thread(gate_t *g) {
  if (PyThread_get_thread_ident() == g->thread) return 1;
  PyErr_SetString(PyExc_RuntimeError, "Gate used outside its kernel's thread");
  return 0;
}

/* begin(exec_id): cell exec_id starts; an interrupt that arrived for it before it began is
 * owed now. */
static PyObject *gate_begin(gate_t *g, PyObject *exec_id) {
  if (!own_thread(g)) return NULL;
  if (!PyUnicode_Check(exec_id)) return PyErr_Format(PyExc_TypeError, "exec_id must be str");
  Py_INCREF(exec_id);
  Py_XSETREF(g->current, exec_id);
  g->in_cell = 1;
  g->armed = 0;
  g->requested = 0;
  if (same_id(g->pending, exec_id)) {
    Py_CLEAR(g->pending);
    g->requested = 1;
  }
  Py_RETURN_NONE;
}

/* call(fn, *args): fn(*args) with interrupts armed. An owed interrupt is raised instead of
 * calling fn. Nested calls stay armed until the outermost returns. */
static PyObject *gate_call(gate_t *g, PyObject *const *args, Py_ssize_t nargs) {
  PyObject *r;
  int outer;
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "call() needs a callable");
    return NULL;
  }
  if (!own_thread(g)) return NULL;
  if (g->requested) {
    g->requested = 0;
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    return NULL;
  }
  outer = !g->armed;
  g->armed = 1;
  r = PyObject_Vectorcall(args[0], args + 1, (size_t)(nargs - 1), NULL);
  if (outer) {
    g->armed = 0;
    if (take_unlanded(g) && g->in_cell) g->requested = 1;
  }
  return r;
}

/* interrupt(exec_id): from any thread (py-host.c's service thread). exec_id None means the
 * running cell. Returns True when a KeyboardInterrupt was raised in the cell or is owed to it
 * (the caller then wakes its sleeps and waits), False when there is nothing to interrupt: a
 * cell that already ended is left alone, one that has not begun is interrupted as it begins. */
static PyObject *gate_interrupt(gate_t *g, PyObject *exec_id) {
  if (exec_id != Py_None && !same_id(exec_id, g->current)) {
    if (PyUnicode_Check(exec_id) && !same_id(exec_id, g->done)) {
      Py_INCREF(exec_id);
      Py_XSETREF(g->pending, exec_id);
    }
    Py_RETURN_FALSE;
  }
  if (!g->in_cell) Py_RETURN_FALSE;
  /* The thread waits for a host call (py-hostcall.c), GIL released: an asynchronous exception
   * would land only once the host answered, so the wait itself is woken, and raises. */
  if (g->waiter != NULL)
    kh__hcwait_interrupt(g->waiter);
  else if (g->armed)
    PyThreadState_SetAsyncExc(g->thread, PyExc_KeyboardInterrupt);
  else
    g->requested = 1;
  Py_RETURN_TRUE;
}

/* signal(): asked by a worker's SIGINT handler (on the kernel's thread): True means raise
 * KeyboardInterrupt now. Outside a cell it is raised too, as before the gate existed (the
 * worker drops or reports what lands between cells, core/worker/main.c). */
static PyObject *gate_signal(gate_t *g, PyObject *noargs) {
  (void)noargs;
  if (g->armed || !g->in_cell) Py_RETURN_TRUE;
  g->requested = 1;
  Py_RETURN_FALSE;
}

/* end(value): the cell is over; returns value, so that `return gate.end(reply)` leaves no
 * bookkeeping after it in which an interrupt could land. */
static PyObject *gate_end(gate_t *g, PyObject *value) {
  if (!own_thread(g)) return NULL;
  g->armed = 0;
  g->requested = 0;
  g->in_cell = 0;
  take_unlanded(g);
  Py_XSETREF(g->done, g->current);
  g->current = NULL;
  return Py_NewRef(value);
}

static PyObject *gate_get_armed(gate_t *g, void *closure) {
  (void)closure;
  return PyBool_FromLong(g->armed);
}

static PyMethodDef gate_methods[] = {
    {"begin", (PyCFunction)gate_begin, METH_O, "begin(exec_id): a cell starts"},
    {"call", (PyCFunction)(void (*)(void))gate_call, METH_FASTCALL,
     "call(fn, *args): fn(*args) with interrupts armed"},
    {"interrupt", (PyCFunction)gate_interrupt, METH_O,
     "interrupt(exec_id or None) -> bool (any thread)"},
    {"signal", (PyCFunction)gate_signal, METH_NOARGS, "SIGINT arrived: raise now? (worker)"},
    {"end", (PyCFunction)gate_end, METH_O, "end(value) -> value: the cell is over"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef gate_getset[] = {
    {"armed", (getter)gate_get_armed, NULL, "user code runs inside call()", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject gate_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_kernelhost.Gate",
    .tp_basicsize = sizeof(gate_t),
    .tp_dealloc = (destructor)gate_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Gate(): when interrupts may land in the creating thread (py-gate.c).",
    .tp_methods = gate_methods,
    .tp_getset = gate_getset,
    .tp_init = (initproc)gate_init,
    .tp_new = PyType_GenericNew,
};

/* Only for the gate's own thread, GIL held; anything else is left alone (returns 0). */
static gate_t *own_gate(PyObject *gate) {
  if (gate == NULL || !PyObject_TypeCheck(gate, &gate_type)) return NULL;
  if (PyThread_get_thread_ident() != ((gate_t *)gate)->thread) return NULL;
  return (gate_t *)gate;
}

int kh__py_gate_wait_begin(PyObject *gate, kh__hcwait_t *w) {
  gate_t *g = own_gate(gate);
  if (g == NULL) return 0;
  /* An interrupt raised for this cell that has not landed yet (it lands at the next bytecode
   * boundary, which a C call does not pass): it is due now. */
  if (take_unlanded(g)) return -1;
  if (w != NULL) g->waiter = w; /* borrowed: the waiting thread holds it until wait_end */
  return 0;
}

void kh__py_gate_wait_end(PyObject *gate) {
  gate_t *g = own_gate(gate);
  if (g != NULL) g->waiter = NULL;
}

int kh__py_gate_add_type(PyObject *module) {
  if (PyType_Ready(&gate_type) < 0) return -1;
  Py_INCREF(&gate_type);
  if (PyModule_AddObject(module, "Gate", (PyObject *)&gate_type) < 0) {
    Py_DECREF(&gate_type);
    return -1;
  }
  return 0;
}
