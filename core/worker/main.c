/* main.c: kernelhost-worker, the process behind one worker-mode kernel. CPython runs on the main
 * thread (so SIGINT raises KeyboardInterrupt anywhere, time.sleep included) with the same
 * runtime as main_thread kernels. Frames (frame.c) come in on fd 3 and go out on fd 4; fds 1
 * and 2 are pipes that a capture thread forwards as `stream` events of the running request.
 * The kernel's sandbox (sandbox.c) is applied while the process is still single-threaded.
 *
 * A cell may os.fork(). The child is a copy of this process with one thread, still inside the
 * cell, and must never speak the protocol: the host would take its frames for the worker's
 * (a second reply kills the kernel with protocol_error) and it would steal the worker's
 * commands. So the child closes the protocol at once (forked_child, a pthread_atfork handler),
 * writes what it prints to fds 1 and 2, which the worker still captures (so the child's
 * output reaches the host as stream events of the worker's running cell, as a subprocess's
 * does), drops every other event, and exits when its copy of the cell ends (status 0, or 1 if
 * the cell failed), never reading a command. Whatever it does (lives on, sleeps, exits,
 * raises), the worker does not wait for it; it dies with the worker's process group. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "py-internal.h"

#define CAPTURE_CHUNK 65536

static int in_fd = -1;   /* commands from the host */
static int out_fd = -1;  /* frames to the host */
static int diag_fd = -1; /* the host's stderr, for the worker's own fatal messages */
static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

/* fd-level output capture: the read ends of the pipes now behind fds 1 and 2. */
static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static int cap_fd[2] = {-1, -1};
static unsigned char cap_carry[2][4];    /* guarded by cap_mu: an incomplete UTF-8 sequence */
static int cap_carry_n[2];               /* guarded by cap_mu */
static char running_id[KH__EXEC_ID_MAX]; /* guarded by cap_mu: "" between cells */
static char pending_interrupt[KH__EXEC_ID_MAX]; /* guarded by cap_mu: for a cell not started */
static pthread_t main_tid;
/* The cell an interrupt is aimed at until Python's SIGINT handler confirms it ran: a signal that
 * arrives just before a blocking call begins (time.sleep) trips Python's flag but nothing
 * checks it until the call returns, so the command thread re-sends SIGINT until it lands. */
static char intr_id[KH__EXEC_ID_MAX]; /* guarded by cap_mu: "" when none is outstanding */
/* limits.maxOutputBytes for what fds 1 and 2 carry in one cell (0: none); set before the
 * capture thread starts. print() output is cut by the runtime's OutBuffer at the same limit. */
static uint64_t cap_limit;
static int cap_limited;      /* cap_limit applies (maxOutputBytes may be 0: no output) */
static uint64_t cap_written; /* guarded by cap_mu: bytes emitted for the running cell */
static int cap_cut;          /* guarded by cap_mu: the running cell's fd output was cut */
/* The command pipe's decoder: the main thread reads the "open" frame with it, then the command
 * thread takes it over (with any bytes already buffered behind that frame). */
static kh__frame_dec_t cmd_dec;

/* Commands for the main thread, from the command thread. */
typedef struct cmd_s {
  struct cmd_s *next;
  json_t *msg;
  kh__bufs_t bufs; /* a comm message's buffers, copied: the decoder's bytes move on */
} cmd_t;
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
/* Commands are read by whichever thread gets to the pipe first: the command thread always
 * waits on it, and so does the main thread while it is idle, so a cell arriving at an idle
 * worker runs without a hand-off between threads (one wake-up fewer per request). */
static pthread_mutex_t rd_mu = PTHREAD_MUTEX_INITIALIZER; /* guards cmd_dec after start */
static int q_efd = -1; /* eventfd: the command thread queued a command for the main thread */
static cmd_t *q_head, *q_tail; /* guarded by q_mu */

/* This process is a child that a cell forked (see the top of this file): written once, in
 * the child, before any of its code runs. */
static int forked;

static PyObject *rt;      /* guarded by the GIL: the runtime's Kernel, once opened */
static PyObject *open_fn; /* guarded by the GIL */

static void diag(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof(buf) - 2) n = sizeof(buf) - 2;
  buf[n++] = '\n';
  if (write(diag_fd >= 0 ? diag_fd : 2, buf, (size_t)n) < 0) {
  }
}

/* Writes iov[0..n) (whole frames, length words included) atomically with respect to other
 * writers. A failed write means the host is gone: there is no one left to serve. */
static void write_iov_locked(struct iovec *all, int n) {
  int i = 0;
  if (forked) return; /* the protocol is the worker's, never a forked child's */
  pthread_mutex_lock(&write_mu);
  while (i < n) {
    ssize_t w = writev(out_fd, all + i, n - i > IOV_MAX ? IOV_MAX : n - i);
    if (w < 0) {
      if (errno == EINTR) continue;
      _exit(0);
    }
    while (i < n && (size_t)w >= all[i].iov_len) w -= (ssize_t)all[i++].iov_len;
    if (i < n) {
      all[i].iov_base = (char *)all[i].iov_base + w;
      all[i].iov_len -= (size_t)w;
    }
  }
  pthread_mutex_unlock(&write_mu);
}

/* Writes one frame (the iovecs after the length) and then its binary attachments (bufs, each a
 * binary frame: frame.c), all at once. */
static void write_frame_bufs(struct iovec *iov, int n, const kh_buffer_t *bufs, size_t nb) {
  char hdr[4], rawhdr[KH__FRAME_BUFS_MAX][4];
  size_t total = 0, k;
  int i;
  struct iovec all[8 + 2 * KH__FRAME_BUFS_MAX];
  if (n > 7 || nb > KH__FRAME_BUFS_MAX) return;
  for (i = 0; i < n; i++) total += iov[i].iov_len;
  kh__frame_put_len(hdr, total);
  all[0].iov_base = hdr;
  all[0].iov_len = 4;
  memcpy(all + 1, iov, sizeof(*iov) * (size_t)n);
  n++;
  for (k = 0; k < nb; k++) {
    kh__frame_put_len(rawhdr[k], bufs[k].len | KH__FRAME_BINARY);
    all[n].iov_base = rawhdr[k];
    all[n++].iov_len = 4;
    all[n].iov_base = (void *)bufs[k].data;
    all[n++].iov_len = bufs[k].len;
  }
  write_iov_locked(all, n);
}

static void write_frame_iov(struct iovec *iov, int n) {
  write_frame_bufs(iov, n, NULL, 0);
}

static void write_json(json_t *o) {
  char *s = json_dumps(o, JSON_COMPACT);
  struct iovec iov;
  if (s == NULL) return;
  iov.iov_base = s;
  iov.iov_len = strlen(s);
  write_frame_iov(&iov, 1);
  free(s);
}

/* A frame whose member `key` is JSON text made elsewhere (the runtime's payloads, a host call's
 * arguments): the header object is encoded by jansson, the text spliced in as its last member
 * (key is one of ours, with no character JSON must escape); bufs (the text's binary values)
 * follow as binary frames, their paths in the header's "bufs". */
static void write_with_key_bufs(json_t *head, const char *key, const char *data, size_t len,
                                const kh_buffer_t *bufs, size_t nb) {
  char *s, sep[40];
  struct iovec iov[4];
  size_t n, k;
  if (nb > 0) {
    json_t *paths = json_array();
    for (k = 0; k < nb; k++) json_array_append_new(paths, json_string(bufs[k].path));
    if (json_array_size(paths) != nb || json_object_set_new(head, "bufs", paths) != 0) return;
  }
  s = json_dumps(head, JSON_COMPACT);
  if (s == NULL) return;
  n = strlen(s);
  snprintf(sep, sizeof(sep), ",\"%s\":", key);
  iov[0].iov_base = s;
  iov[0].iov_len = n - 1; /* without the closing brace */
  iov[1].iov_base = sep;
  iov[1].iov_len = strlen(sep);
  iov[2].iov_base = (void *)data;
  iov[2].iov_len = len;
  iov[3].iov_base = (void *)"}";
  iov[3].iov_len = 1;
  write_frame_bufs(iov, 4, bufs, nb);
  free(s);
}

static void write_with_data_bufs(json_t *head, const char *data, size_t len,
                                 const kh_buffer_t *bufs, size_t nb) {
  write_with_key_bufs(head, "data", data, len, bufs, nb);
}

static void write_with_data(json_t *head, const char *data, size_t len) {
  write_with_data_bufs(head, data, len, NULL, 0);
}

static void fatal(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  json_t *o;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  diag("kernelhost-worker: %s", buf);
  if (out_fd >= 0 &&
      (o = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_FATAL), "message", buf)) != NULL) {
    write_json(o);
    json_decref(o);
  }
  _exit(70);
}

/* --- events from the runtime (_kernelhost.emit) ------------------------------------------- */

/* Writes all of buf to fd (a forked child's output), as far as it can. */
static void write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    buf += w;
    n -= (size_t)w;
  }
}

/* An event in a forked child: stream text goes to fd 1 or 2 (output a cell wrote through an
 * old reference to the kernel's stream), an error's traceback to fd 2, the rest is dropped. */
static int forked_emit(int type, const char *data, size_t len) {
  json_t *o = json_loadb(data, len, 0, NULL);
  int rc = KH_ECLOSED;
  if (type == KH_EVENT_STREAM && json_is_string(json_object_get(o, "text"))) {
    const char *name = json_string_value(json_object_get(o, "name"));
    json_t *text = json_object_get(o, "text");
    write_all(name && strcmp(name, "stderr") == 0 ? 2 : 1, json_string_value(text),
              json_string_length(text));
    rc = 0;
  } else if (type == KH_EVENT_EXECUTE_ERROR) {
    size_t i;
    json_t *line;
    json_array_foreach(json_object_get(o, "traceback"), i, line) {
      if (!json_is_string(line)) continue;
      write_all(2, json_string_value(line), json_string_length(line));
      write_all(2, "\n", 1);
    }
  }
  json_decref(o);
  return rc;
}

static int worker_emit(kh__sink_t *sink, const char *exec_id, int type, const char *data,
                       size_t len, const kh_buffer_t *bufs, size_t nbufs) {
  json_t *head;
  if (forked) return forked_emit(type, data, len);
  head = json_pack("{s:s, s:s, s:s}", "t", kh__proto_name(KH__P_EV), "type",
                   kh_event_type_name(type), "id", exec_id);
  (void)sink;
  if (head == NULL) return KH_EINVAL; /* exec_id was not UTF-8 */
  write_with_data_bufs(head, data, len, bufs, nbufs);
  json_decref(head);
  return 0;
}

/* --- fd 1 / fd 2 capture ------------------------------------------------------------------ */

/* Emits buf (n bytes of stream `which`) as text, replacing invalid bytes with U+FFFD and
 * keeping an incomplete trailing sequence for the next read unless `final`. cap_mu held. */
static void emit_capture(int which, const unsigned char *buf, size_t n, int final) {
  kh__strbuf_t sb = {0};
  size_t i = 0;
  json_t *o;
  while (i < n) {
    int l = kh__utf8_seq(buf + i, n - i);
    if (l > 0) {
      size_t j = i + (size_t)l;
      while (j < n && buf[j] < 0x80) j++; /* copy ASCII runs in one go */
      kh__sb_append(&sb, (const char *)buf + i, j - i);
      i = j;
    } else if (l == 0 && !final) {
      cap_carry_n[which] = (int)(n - i);
      memcpy(cap_carry[which], buf + i, n - i);
      break;
    } else {
      kh__sb_append(&sb, "\xEF\xBF\xBD", 3);
      i += l < 0 ? (size_t)-l : n - i; /* an incomplete sequence at the very end: all of it */
    }
  }
  if (sb.len > 0 && !sb.oom && cap_limited) {
    /* A cell's fd output past maxOutputBytes: cut on a character boundary, then one marker. */
    if (cap_cut) {
      sb.len = 0;
    } else if (cap_written + sb.len > cap_limit) {
      size_t room = (size_t)(cap_limit - cap_written);
      char marker[128];
      while (room > 0 && (sb.buf[room] & 0xC0) == 0x80) room--;
      sb.len = room;
      snprintf(marker, sizeof(marker),
               "\n[kernelhost: output truncated after %llu bytes (maxOutputBytes)]\n",
               (unsigned long long)cap_limit);
      kh__sb_puts(&sb, marker);
      cap_cut = 1;
    }
    cap_written += sb.len;
  }
  if (sb.len > 0 && !sb.oom) {
    o = json_pack("{s:s, s:s, s:s, s:{s:s, s:s%}}", "t", kh__proto_name(KH__P_EV), "type", "stream",
                  "id", running_id, "data", "name", which ? "stderr" : "stdout", "text", sb.buf,
                  sb.len);
    if (o != NULL) {
      write_json(o);
      json_decref(o);
    }
  }
  kh__sb_free(&sb);
}

/* Reads what stream `which` has now and emits it; returns bytes read, 0 at EOF/EAGAIN. */
static ssize_t capture_read(int which, int final) {
  unsigned char buf[CAPTURE_CHUNK + 4];
  int c = cap_carry_n[which];
  ssize_t r;
  memcpy(buf, cap_carry[which], (size_t)c);
  cap_carry_n[which] = 0;
  do {
    r = read(cap_fd[which], buf + c, CAPTURE_CHUNK);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) {
    if (c) emit_capture(which, buf, (size_t)c, final);
    return r == 0 ? -1 : 0;
  }
  emit_capture(which, buf, (size_t)(c + r), final);
  return r;
}

/* Everything already written to fds 1 and 2 (the cell's writes, a finished subprocess's) goes
 * out before the reply, attributed to the cell. */
static void capture_drain(void) {
  int i;
  fflush(stdout);
  fflush(stderr);
  pthread_mutex_lock(&cap_mu);
  for (i = 0; i < 2; i++) {
    if (cap_fd[i] < 0) continue;
    while (capture_read(i, 0) > 0) {
    }
    if (cap_carry_n[i]) capture_read(i, 1);
  }
  pthread_mutex_unlock(&cap_mu);
}

static void *capture_thread(void *arg) {
  struct pollfd pfd[2];
  (void)arg;
  pfd[0].fd = cap_fd[0];
  pfd[1].fd = cap_fd[1];
  for (;;) {
    int i;
    pfd[0].events = pfd[1].events = POLLIN;
    if (poll(pfd, 2, -1) < 0) continue;
    pthread_mutex_lock(&cap_mu);
    for (i = 0; i < 2; i++) {
      if (pfd[i].revents == 0) continue;
      /* Every writer closed this fd (user code closed fd 1): stop watching it. */
      if (capture_read(i, 0) < 0) pfd[i].fd = -1;
    }
    pthread_mutex_unlock(&cap_mu);
  }
  return NULL;
}

static void set_running(const char *id) {
  pthread_mutex_lock(&cap_mu);
  snprintf(running_id, sizeof(running_id), "%s", id);
  pthread_mutex_unlock(&cap_mu);
}

/* --- commands ----------------------------------------------------------------------------- */

static void input_reply(json_t *msg) {
  json_t *value = json_object_get(msg, "value");
  const char *v = json_string_value(value);
  PyGILState_STATE g = PyGILState_Ensure();
  if (rt != NULL && v != NULL) {
    /* With its length: a reply may hold NUL bytes (\u0000 in the frame). */
    PyObject *r =
        PyObject_CallMethod(rt, "input_reply", "s#", v, (Py_ssize_t)json_string_length(value));
    if (r == NULL) PyErr_Clear();
    Py_XDECREF(r);
  }
  PyGILState_Release(g);
}

/* An interrupt names its cell, so that it can neither miss a cell that has not started yet
 * nor hit the next one: SIGINT goes to the main thread (where Python handles signals, and
 * where it breaks time.sleep) only while that cell runs. */
static void interrupt(const char *id) {
  if (id == NULL) return;
  pthread_mutex_lock(&cap_mu);
  if (strcmp(id, running_id) == 0) {
    snprintf(intr_id, sizeof(intr_id), "%s", id);
    pthread_kill(main_tid, SIGINT);
  } else {
    snprintf(pending_interrupt, sizeof(pending_interrupt), "%s", id);
  }
  pthread_mutex_unlock(&cap_mu);
}

/* Python's SIGINT handler ran (through _kernelhost.note_interrupt): the interrupt landed. */
static void interrupt_landed(void) {
  pthread_mutex_lock(&cap_mu);
  intr_id[0] = '\0';
  pthread_mutex_unlock(&cap_mu);
}

/* Called when the command pipe was quiet for a while: re-sends an interrupt that has not
 * landed, while its cell still runs. Returns the poll timeout to use next. */
static int interrupt_retry(int fired) {
  int timeout = -1;
  pthread_mutex_lock(&cap_mu);
  if (intr_id[0] && strcmp(intr_id, running_id) != 0) intr_id[0] = '\0'; /* cell ended */
  if (intr_id[0]) {
    if (fired) pthread_kill(main_tid, SIGINT);
    timeout = 20;
  }
  pthread_mutex_unlock(&cap_mu);
  return timeout;
}

/* --- editor requests (protocol.h's "interact"), served by py-interact.c's thread ---------- */

/* The answer frame, written from the interact thread (write_frame_iov is atomic per frame). */
static void interact_done(void *ctx, const char *id, int status, const char *text, size_t len) {
  json_t *head = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_ANSWER), "id", id);
  (void)ctx;
  if (head == NULL) return;
  if (status == 0) {
    write_with_data(head, text, len);
  } else {
    json_t *d = json_pack("{s:s%}", "message", text ? text : "", text ? len : 0);
    char *s = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_object_set_new(head, "status", json_integer(status));
    if (s != NULL) write_with_data(head, s, strlen(s));
    free(s);
    json_decref(d);
  }
  json_decref(head);
}

static void interact(json_t *msg) {
  const char *id = json_string_value(json_object_get(msg, "id"));
  const char *op = json_string_value(json_object_get(msg, "op"));
  json_int_t timeout = json_integer_value(json_object_get(msg, "timeout_ms"));
  char *content = json_dumps(json_object_get(msg, "content"), JSON_COMPACT);
  int rc = content ? kh__pyi_submit(&rt, NULL, interact_done, id, op, content, strlen(content),
                                    timeout > 0 ? (uint64_t)timeout : 10000)
                   : KH_ENOMEM;
  if (rc != 0) {
    const char *why = "the worker could not take the request";
    interact_done(NULL, id, rc, why, strlen(why));
  }
  free(content);
}

/* --- host functions (protocol.h's "call" and "result") ------------------------------------ */

/* A thread waiting for the answer to its "call". The command thread (or the waiting main thread
 * itself, which reads the pipe while it waits) settles it and wakes it through its eventfd. */
typedef struct hcwait_s {
  struct hcwait_s *next;
  int64_t id;
  int efd;
  int state;  /* guarded by hc_mu: KH__HC_WAITING until "result" */
  char *text; /* guarded by hc_mu: owned: the value's JSON, or the error */
  size_t len;
  kh_buffer_t *bufs; /* guarded by hc_mu: owned copies of the value's binary values */
  size_t nbufs;
} hcwait_t;
static pthread_mutex_t hc_mu = PTHREAD_MUTEX_INITIALIZER;
static hcwait_t *hc_head;  /* guarded by hc_mu: the calls waited for */
static int64_t hc_last_id; /* guarded by hc_mu */

/* "result": settles the call it names, if anyone still waits for it (an interrupted wait has
 * gone: its late answer is dropped here). Its binary frames are still in the command decoder
 * (rd_mu is held): copied out, once their paths are checked against the value. */
static void host_result(json_t *msg) {
  json_int_t id = json_integer_value(json_object_get(msg, "id"));
  json_t *value = json_object_get(msg, "value"), *paths = json_object_get(msg, "bufs");
  hcwait_t *w;
  char *text;
  size_t len = 0, nb = kh__frame_dec_nbufs(&cmd_dec), i;
  kh_buffer_t views[KH__FRAME_BUFS_MAX], *bufs = NULL;
  char why[KH__ERRMSG_MAX];
  int state;
  if (nb > 0) {
    if (value == NULL) fatal("command pipe: binary frames after a \"result\" without a value");
    for (i = 0; i < nb; i++) {
      views[i].path = json_string_value(json_array_get(paths, i));
      views[i].data = kh__frame_dec_buf(&cmd_dec, i, &views[i].len);
    }
    if (kh__bufs_check(value, views, nb, why) != 0) fatal("command pipe: %s", why);
    if (kh__buffers_copy(views, nb, &bufs) != 0) fatal("out of memory");
  }
  if (value != NULL) {
    text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    len = text ? strlen(text) : 0;
    state = KH__HC_ANSWERED;
  } else {
    json_t *e = json_object_get(msg, "error"); /* may hold NULs: kept with its length */
    len = json_string_length(e);
    text = kh__memdup(json_string_value(e), len + 1);
    state = KH__HC_FAILED;
  }
  if (text == NULL) {
    text = kh__strdup("out of memory reading the host's answer");
    len = text ? strlen(text) : 0;
    state = KH__HC_FAILED;
  }
  pthread_mutex_lock(&hc_mu);
  for (w = hc_head; w != NULL && w->id != id; w = w->next) {
  }
  if (w != NULL && w->state == KH__HC_WAITING) {
    uint64_t one = 1;
    w->state = state;
    w->text = text;
    w->len = text ? len : 0;
    w->bufs = bufs;
    w->nbufs = bufs ? nb : 0;
    text = NULL;
    bufs = NULL;
    if (write(w->efd, &one, sizeof(one)) < 0) {
      /* EAGAIN: it is awake already */
    }
  }
  pthread_mutex_unlock(&hc_mu);
  free(text);
  kh__buffers_free(bufs, nb);
}

/* from_main: 0 the command thread, 1 the main thread (idle, or waiting for a host call), 2 the
 * main thread spinning for a host call's answer (takes the pipe only if no one else has it). */
static void pump_commands(int from_main);

static void hc_forget(hcwait_t *w) {
  hcwait_t **pp;
  pthread_mutex_lock(&hc_mu);
  for (pp = &hc_head; *pp != NULL && *pp != w; pp = &(*pp)->next) {
  }
  if (*pp != NULL) *pp = w->next;
  pthread_mutex_unlock(&hc_mu);
  close(w->efd);
  free(w->text);
  kh__buffers_free(w->bufs, w->nbufs);
  free(w);
}

/* kh__py_start_t.hostcall: sends "call" and waits for its "result", GIL released. The main
 * thread (the cell's) also reads the command pipe meanwhile, as when idle, and SIGINT breaks
 * its poll(): Python's handler then raises KeyboardInterrupt (when the gate says so, as
 * everywhere in a cell), and the call is forgotten. */
#define HC_SPIN_NS 100000 /* how long a waiting thread spins before it sleeps */

static uint64_t hc_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int worker_hostcall(int cell, const char *name, const char *args, size_t len,
                           const kh_buffer_t *buffers, size_t nbuffers, int *state, char **text,
                           size_t *text_len, kh_buffer_t **out_buffers, size_t *out_nbuffers) {
  hcwait_t *w;
  json_t *head;
  PyThreadState *ts;
  uint64_t spin_until;
  int main_thread = pthread_equal(pthread_self(), main_tid);
  *out_buffers = NULL;
  *out_nbuffers = 0;
  if (forked) {
    PyErr_SetString(PyExc_RuntimeError,
                    "host functions cannot be called from a process that a cell forked");
    return -1;
  }
  if (nbuffers > KH__FRAME_BUFS_MAX) {
    PyErr_Format(PyExc_TypeError,
                 "a host call carries at most %d bytes values (this one has %zu): join them",
                 KH__FRAME_BUFS_MAX, nbuffers);
    return -1;
  }
  if ((w = calloc(1, sizeof(*w))) == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->efd < 0) {
    free(w);
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
  }
  /* The host refuses an id that is not greater than the last it saw: ids are given and their
   * frames written under one lock, so threads calling at once cannot overtake each other. */
  pthread_mutex_lock(&hc_mu);
  w->id = ++hc_last_id;
  head = json_pack("{s:s, s:I, s:s, s:b}", "t", kh__proto_name(KH__P_CALL), "id", (json_int_t)w->id,
                   "name", name, "cell", cell);
  if (head != NULL) {
    w->next = hc_head;
    hc_head = w;
    write_with_key_bufs(head, "args", args, len, buffers, nbuffers);
  }
  pthread_mutex_unlock(&hc_mu);
  if (head == NULL) {
    close(w->efd);
    free(w);
    PyErr_NoMemory();
    return -1;
  }
  json_decref(head);
  /* Spinning first (polling without sleeping, yielding the CPU each turn) catches a quick
   * function's answer without a wake-up: ~25 us of a no-op call's ~45 us here was the sleeping
   * thread's wake-up. */
  spin_until = hc_now_ns() + HC_SPIN_NS;
  for (;;) {
    struct pollfd pfd[2];
    int done, n = main_thread ? 2 : 1, spin, r;
    pthread_mutex_lock(&hc_mu);
    done = w->state != KH__HC_WAITING;
    pthread_mutex_unlock(&hc_mu);
    if (done) break;
    spin = hc_now_ns() < spin_until;
    pfd[0].fd = w->efd;
    pfd[0].events = POLLIN;
    pfd[1].fd = in_fd;
    pfd[1].events = POLLIN;
    ts = PyEval_SaveThread();
    r = poll(pfd, (nfds_t)n, spin ? 0 : -1);
    if (r > 0 && n == 2 && pfd[1].revents)
      pump_commands(spin ? 2 : 1);
    else if (r == 0)
      sched_yield();
    PyEval_RestoreThread(ts);
    /* SIGINT (an interrupt) broke the poll, or arrived meanwhile: Python's handler runs now. */
    if (main_thread && PyErr_CheckSignals() < 0) {
      hc_forget(w);
      return -1;
    }
  }
  *state = w->state;
  *text = w->text;
  *text_len = w->len;
  *out_buffers = w->bufs;
  *out_nbuffers = w->nbufs;
  w->text = NULL;
  w->bufs = NULL;
  w->nbufs = 0;
  hc_forget(w);
  return 0;
}

/* Reads what the command pipe holds now (it is non-blocking once the threads run) and handles
 * every whole frame: interrupts and input replies at once, the rest queued for the main thread
 * (woken through q_efd unless it is the caller). EOF means the host closed the kernel or died:
 * exit at once. */
static void pump_commands(int from_main) {
  kh__frame_dec_t *d = &cmd_dec;
  static char buf[65536]; /* guarded by rd_mu */
  json_t *msg;
  int rc, queued = 0;
  if (from_main == 2) { /* a spinning waiter: another reader has it in hand, or will */
    if (pthread_mutex_trylock(&rd_mu) != 0) return;
  } else {
    pthread_mutex_lock(&rd_mu);
  }
  for (;;) {
    ssize_t n = read(in_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) _exit(0);
    if (kh__frame_dec_feed(d, buf, (size_t)n) != 0) fatal("command pipe: %s", d->err);
    if ((size_t)n < sizeof(buf)) break;
  }
  while ((rc = kh__frame_dec_next(d, &msg)) == 1) {
    char why[200];
    kh__pmsg_t kind = kh__proto_check(msg, KH__P_TO_WORKER, 0, why, sizeof(why));
    if (kind == KH__P_NONE) fatal("command pipe: %s", why);
    if (kind == KH__P_INTERACT || kind == KH__P_CANCEL) {
      if (kind == KH__P_INTERACT)
        interact(msg);
      else
        kh__pyi_cancel(json_string_value(json_object_get(msg, "id")));
      json_decref(msg);
      continue;
    }
    if (kind == KH__P_EXPOSE || kind == KH__P_RESULT) {
      if (kind == KH__P_EXPOSE)
        kh__py_set_host_names(json_object_get(msg, "names"));
      else
        host_result(msg);
      json_decref(msg);
      continue;
    }
    if (kind == KH__P_INPUT || kind == KH__P_INTERRUPT) {
      if (kind == KH__P_INPUT)
        input_reply(msg);
      else
        interrupt(json_string_value(json_object_get(msg, "id")));
      json_decref(msg);
      continue;
    }
    {
      cmd_t *c = calloc(1, sizeof(*c));
      size_t i, nb = kh__frame_dec_nbufs(d);
      if (c == NULL) fatal("out of memory");
      c->msg = msg;
      /* Only "comm" carries buffers (protocol.c refuses "bufs" elsewhere): "/buffers/0" ... in
       * order, which is the list the comm's handler gets. */
      for (i = 0; i < nb; i++) {
        char want[32];
        size_t len;
        const char *bytes = kh__frame_dec_buf(d, i, &len);
        const char *path = json_string_value(json_array_get(json_object_get(msg, "bufs"), i));
        snprintf(want, sizeof(want), "/buffers/%zu", i);
        if (path == NULL || strcmp(path, want) != 0)
          fatal("command pipe: comm buffers out of order");
        if (kh__bufs_add_copy(&c->bufs, path, bytes, len) != 0) fatal("out of memory");
      }
      pthread_mutex_lock(&q_mu);
      if (q_tail)
        q_tail->next = c;
      else
        q_head = c;
      q_tail = c;
      pthread_mutex_unlock(&q_mu);
      queued = 1;
    }
  }
  if (rc < 0) fatal("command pipe: %s", d->err);
  pthread_mutex_unlock(&rd_mu);
  if (queued && !from_main) {
    uint64_t one = 1;
    if (write(q_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
      fatal("eventfd: %s", strerror(errno));
  }
}

/* Waits on the command pipe for the life of the process; during a cell it is the only reader,
 * so interrupts and input replies land while Python runs. */
static void *command_thread(void *arg) {
  (void)arg;
  pump_commands(0); /* frames the main thread read past "open" */
  for (;;) {
    struct pollfd pfd;
    int rc, timeout = interrupt_retry(0);
    pfd.fd = in_fd;
    pfd.events = POLLIN;
    rc = poll(&pfd, 1, timeout);
    if (rc == 0) {
      interrupt_retry(1);
      continue;
    }
    if (rc < 0) continue; /* EINTR */
    pump_commands(0);
  }
  return NULL;
}

/* The first frame from the host, read on the main thread before any other thread exists (a
 * pooled worker waits here until it is claimed). EOF: the host is gone. */
static json_t *read_first_frame(void) {
  static char buf[65536];
  json_t *msg;
  int rc;
  for (;;) {
    ssize_t n;
    if ((rc = kh__frame_dec_next(&cmd_dec, &msg)) == 1) return msg;
    if (rc < 0) fatal("command pipe: %s", cmd_dec.err);
    n = read(in_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0);
    if (kh__frame_dec_feed(&cmd_dec, buf, (size_t)n) != 0) fatal("command pipe: %s", cmd_dec.err);
  }
}

static cmd_t *next_command(void) {
  cmd_t *c = NULL;
  Py_BEGIN_ALLOW_THREADS for (;;) {
    struct pollfd pfd[2];
    pthread_mutex_lock(&q_mu);
    c = q_head;
    if (c != NULL) {
      q_head = c->next;
      if (q_head == NULL) q_tail = NULL;
    }
    pthread_mutex_unlock(&q_mu);
    if (c != NULL) break;
    pfd[0].fd = in_fd;
    pfd[0].events = POLLIN;
    pfd[1].fd = q_efd;
    pfd[1].events = POLLIN;
    if (poll(pfd, 2, -1) < 0) continue; /* EINTR */
    if (pfd[1].revents & POLLIN) {
      uint64_t n;
      if (read(q_efd, &n, sizeof(n)) < 0) {
        /* EAGAIN: drained already */
      }
    }
    if (pfd[0].revents) pump_commands(1);
  }
  Py_END_ALLOW_THREADS return c;
}

/* Opens the kernel; `applied` (borrowed, may be NULL) is the sandbox's report for "ready". */
static void do_open(json_t *msg, json_t *applied) {
  const char *id = json_string_value(json_object_get(msg, "id"));
  const char *cwd = json_string_value(json_object_get(msg, "cwd"));
  json_t *env = json_object_get(msg, "env");
  char *env_s = json_is_object(env) ? json_dumps(env, JSON_COMPACT) : NULL;
  json_t *reply;
  PyObject *r = NULL, *max_out = NULL, *ff;
  if (cap_limited)
    max_out = PyLong_FromUnsignedLongLong((unsigned long long)cap_limit);
  else
    max_out = Py_NewRef(Py_None);
  ff = kh__py_strings(json_object_get(msg, "figure_formats"));
  if (rt == NULL && id != NULL && max_out != NULL && ff != NULL)
    r = PyObject_CallFunction(open_fn, "szzOO", id, env_s, cwd, max_out, ff);
  Py_XDECREF(ff);
  Py_XDECREF(max_out);
  free(env_s);
  if (r != NULL && json_is_string(json_object_get(msg, "binary")) &&
      strcmp(json_string_value(json_object_get(msg, "binary")), "base64") == 0) {
    PyObject *b = PyUnicode_FromString("base64");
    if (b == NULL || PyObject_SetAttrString(r, "binary", b) != 0) Py_CLEAR(r);
    Py_XDECREF(b);
  }
  if (r != NULL) {
    rt = r;
    reply = json_pack("{s:s}", "t", kh__proto_name(KH__P_READY));
    if (reply != NULL && applied != NULL) json_object_set(reply, "sandbox", applied);
  } else {
    char buf[KH__ERRMSG_MAX - 64];
    if (PyErr_Occurred())
      kh__py_describe_error(buf, sizeof(buf));
    else
      snprintf(buf, sizeof(buf), "bad open command");
    reply = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_READY), "error", buf);
  }
  if (reply) write_json(reply);
  json_decref(reply);
}

/* A signal that arrived after its cell ended (interrupts race with replies) must not hit the
 * next cell: the host only interrupts a running cell, and a new cell starts only after the
 * host has seen the previous reply, so anything pending now is stale. */
static void drop_stale_interrupt(void) {
  if (PyErr_CheckSignals() < 0) PyErr_Clear();
}

/* The reply (and execute_error event) of a cell that an interrupt stopped outside the
 * runtime's handling. */
static char *interrupted_reply(const char *id, size_t *len) {
  PyObject *c = rt ? PyObject_GetAttrString(rt, "execution_count") : NULL;
  long count = c && PyLong_Check(c) ? PyLong_AsLong(c) : 0;
  json_t *err = json_pack("{s:s, s:s, s:[s]}", "ename", "KeyboardInterrupt", "evalue", "",
                          "traceback", "KeyboardInterrupt");
  json_t *reply =
      json_pack("{s:s, s:i, s:O}", "status", "error", "execution_count", (int)count, "error", err);
  char *s = err ? json_dumps(err, JSON_COMPACT) : NULL;
  char *out = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
  Py_XDECREF(c);
  PyErr_Clear();
  if (s != NULL) worker_emit(NULL, id, KH_EVENT_EXECUTE_ERROR, s, strlen(s), NULL, 0);
  free(s);
  json_decref(err);
  json_decref(reply);
  *len = out ? strlen(out) : 0;
  return out;
}

/* Runs a request, "exec" (a cell) or "comm" (a comm message from the host, which the runtime's
 * comm manager handles), on this thread, and writes its reply. */
static void do_exec(json_t *msg, kh__pmsg_t kind, const kh__bufs_t *bufs) {
  const char *id = json_string_value(json_object_get(msg, "id"));
  json_t *code = json_object_get(msg, "code");
  int silent = json_is_true(json_object_get(msg, "silent"));
  int store = json_is_true(json_object_get(msg, "store_history"));
  int allow_stdin = json_is_true(json_object_get(msg, "allow_stdin"));
  int comm = kind == KH__P_COMM;
  PyObject *text = NULL, *r = NULL;
  json_t *head;
  char *fallback = NULL, *content = NULL;
  const char *data;
  size_t len = 0;
  kh_buffer_t views[KH__FRAME_BUFS_MAX];
  Py_buffer held[KH__FRAME_BUFS_MAX];
  Py_ssize_t nb, i;
  int early;
  if (comm) content = json_dumps(json_object_get(msg, "content"), JSON_COMPACT);
  if (id == NULL || (comm ? content == NULL : !json_is_string(code))) fatal("bad exec command");
  drop_stale_interrupt();
  pthread_mutex_lock(&cap_mu);
  snprintf(running_id, sizeof(running_id), "%s", id);
  cap_written = 0;
  cap_cut = 0;
  early = strcmp(pending_interrupt, id) == 0; /* interrupted before it started */
  pending_interrupt[0] = '\0';
  pthread_mutex_unlock(&cap_mu);
  if (early && comm) {
    /* A comm message interrupted before its handler ran: it is dropped, as a handler that the
     * interrupt stopped would be; there is no cell to report a KeyboardInterrupt for. */
    r = PyBytes_FromString("{\"status\":\"ok\"}");
  } else if (!early && comm) {
    PyObject *list = PyList_New((Py_ssize_t)bufs->n);
    size_t k;
    for (k = 0; list != NULL && k < bufs->n; k++) {
      PyObject *b =
          PyBytes_FromStringAndSize(bufs->v[k].blob->data, (Py_ssize_t)bufs->v[k].blob->len);
      if (b == NULL)
        Py_CLEAR(list);
      else
        PyList_SET_ITEM(list, (Py_ssize_t)k, b);
    }
    text = PyUnicode_FromString(content);
    if (text != NULL && list != NULL && rt != NULL)
      r = PyObject_CallMethod(rt, "comm", "ssOO", id,
                              json_string_value(json_object_get(msg, "msg_type")), text, list);
    Py_XDECREF(text);
    Py_XDECREF(list);
  } else if (!early) {
    text =
        PyUnicode_FromStringAndSize(json_string_value(code), (Py_ssize_t)json_string_length(code));
    if (text != NULL && rt != NULL)
      r = PyObject_CallMethod(rt, "execute", "sOiii", id, text, silent, store, allow_stdin);
    Py_XDECREF(text);
  }
  free(content);
  if (forked) {
    /* A child that a cell forked, at the end of its copy of the cell: it never replies. Its
     * line-buffered streams may hold a last line without a newline. */
    const char *const names[] = {"stdout", "stderr"};
    int i;
    for (i = 0; i < 2; i++) {
      PyObject *f = PySys_GetObject(names[i]),
               *x = f ? PyObject_CallMethod(f, "flush", NULL) : NULL;
      Py_XDECREF(x);
    }
    PyErr_Clear();
    int ok = r != NULL && PyBytes_Check(r) &&
             strncmp(PyBytes_AS_STRING(r), "{\"status\":\"ok\"", 14) == 0;
    _exit(ok ? 0 : 1);
  }
  capture_drain();
  set_running("");
  /* A SIGINT sent just before the cell ended may still be pending: it was for this cell. */
  if (r != NULL) drop_stale_interrupt();
  if ((nb = kh__py_reply_parts(r, &data, &len, views, held)) < 0) nb = 0, data = NULL;
  if (data == NULL) {
    char buf[KH__ERRMSG_MAX];
    if (!comm && (early || (r == NULL && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)))) {
      /* The interrupt landed before the cell started or outside the runtime's own handling
       * (as it began or finished the cell): report it as the cell's KeyboardInterrupt. */
      PyErr_Clear();
      fallback = interrupted_reply(id, &len);
    } else {
      if (r == NULL)
        kh__py_describe_error(buf, sizeof(buf));
      else
        snprintf(buf, sizeof(buf), "runtime returned no reply");
      fallback = kh__py_error_reply("KernelError", buf, &len);
    }
    data = fallback;
  }
  head = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_REPLY), "id", id);
  if (head != NULL && data != NULL) write_with_data_bufs(head, data, len, views, (size_t)nb);
  json_decref(head);
  for (i = 0; i < nb; i++) PyBuffer_Release(&held[i]);
  free(fallback);
  Py_XDECREF(r);
}

/* --- start-up ----------------------------------------------------------------------------- */

static void start_thread(void *(*fn)(void *)) {
  pthread_t t;
  pthread_attr_t a;
  sigset_t block, old;
  /* Only the main thread takes SIGINT: that is where Python runs its handlers. */
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 256 * 1024);
  if (pthread_create(&t, &a, fn, NULL) != 0) fatal("cannot start a thread");
  pthread_attr_destroy(&a);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* pthread_atfork's child handler: in a child that a cell forked (or a subprocess about to exec,
 * where it does no harm), before any of the child's own code runs. Only async-signal-safe
 * calls: the child of a threaded process may hold copies of locks that no thread will release
 * (write_mu, cap_mu), so it must never take them, which the flag ensures. */
static void forked_child(void) {
  int fds[5], i;
  forked = 1;
  fds[0] = in_fd;
  fds[1] = out_fd;
  fds[2] = q_efd;
  fds[3] = cap_fd[0];
  fds[4] = cap_fd[1];
  in_fd = out_fd = q_efd = cap_fd[0] = cap_fd[1] = -1;
  for (i = 0; i < 5; i++)
    if (fds[i] >= 0) close(fds[i]);
}

static void setup_fds(void) {
  int p[2], i;
  in_fd = fcntl(3, F_DUPFD_CLOEXEC, 10);
  out_fd = fcntl(4, F_DUPFD_CLOEXEC, 10);
  diag_fd = fcntl(2, F_DUPFD_CLOEXEC, 10);
  if (in_fd < 0 || out_fd < 0) {
    diag(
        "kernelhost-worker: fds 3 and 4 must be the host's protocol pipes; this program is "
        "started by libkernelhost, not by hand");
    _exit(2);
  }
  /* User code must not reach the protocol by its well-known numbers, nor children inherit it. */
  close(3);
  close(4);
  for (i = 0; i < 2; i++) {
    if (pipe2(p, O_CLOEXEC) != 0) fatal("pipe: %s", strerror(errno));
    if (dup2(p[1], i + 1) < 0) fatal("dup2: %s", strerror(errno));
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    cap_fd[i] = p[0];
  }
  i = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (i >= 0) {
    dup2(i, 0);
    close(i);
  }
  /* Line-buffered like a terminal, so C extensions' printf output comes out as it happens. */
  setvbuf(stdout, NULL, _IOLBF, 0);
}

/* Python on this (main) thread, where SIGINT raises KeyboardInterrupt; the runtime's part of
 * opening a kernel is _kh_worker.open_kernel, looked up once here. */
static int start_python(char *err) {
  static const kh__py_start_t how = {KH__PY_WORKER, worker_emit, interrupt_landed, worker_hostcall};
  PyObject *mod;
  if (kh__py_start(&how, err) != 0) return -1;
  mod = PyImport_ImportModule("_kh_worker");
  open_fn = mod ? PyObject_GetAttrString(mod, "open_kernel") : NULL;
  Py_XDECREF(mod);
  if (open_fn == NULL) {
    char buf[KH__ERRMSG_MAX - 64];
    kh__py_describe_error(buf, sizeof(buf));
    snprintf(err, KH__ERRMSG_MAX, "loading the kernelhost runtime failed: %s", buf);
    return -1;
  }
  return 0;
}


/* --- the fork server ---------------------------------------------------------------------- */

/* With the manager option pool.mode "fork" the host starts this program once as a template
 * (protocol.h's second diagram): Python up, the runtime and the preload modules imported, the
 * heap frozen, then one fork per request. The template stays single-threaded, so a child starts
 * with no lock held by a thread it does not have; the child then goes on exactly as a spawned
 * worker does after start_python(), from "hello" on. */

static int tmpl_fd = -1; /* the template's socket to the host: requests in, answers out */

/* Thread pools that numerical libraries start when they are loaded (OpenBLAS starts one thread
 * per core at `import numpy` when it is the BLAS, as OpenMP runtimes do) would make the
 * template multi-threaded and its children unsafe. The template asks them for one thread,
 * unless the host's environment chose a number itself; each child forgets that request before
 * its kernel opens, and gives OpenBLAS back its own count once its sandbox is on (blas_restore). */
static const char *const one_thread_vars[] = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                              "MKL_NUM_THREADS", "BLIS_NUM_THREADS"};
#define N_ONE_THREAD_VARS (sizeof(one_thread_vars) / sizeof(one_thread_vars[0]))
static unsigned one_thread_set; /* bit i: the template set one_thread_vars[i] */

static int thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* A "fatal" naming the preload module that could not be imported (or that left threads). */
static void tmpl_fail(const char *module, const char *fmt, ...) {
  char buf[KH__ERRMSG_MAX];
  va_list ap;
  json_t *o;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  o = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_FATAL), "message", buf);
  if (o != NULL && module != NULL) json_object_set_new(o, "module", json_string(module));
  if (o != NULL) write_json(o);
  json_decref(o);
  _exit(72);
}

/* Imports the runtime's modules that opening a kernel needs and the preload list, and freezes
 * what they made: objects in the permanent generation are never visited by the collector, so
 * a child's collections do not write to (and copy) the pages it shares with the template. */
static void tmpl_preload(int n, char **mods) {
  static const char *const runtime[] = {"json", "_kh_sandbox"};
  PyObject *m, *r;
  size_t k;
  int i, t;
  for (k = 0; k < sizeof(runtime) / sizeof(runtime[0]); k++) {
    m = PyImport_ImportModule(runtime[k]);
    if (m == NULL) {
      char buf[KH__ERRMSG_MAX - 64];
      kh__py_describe_error(buf, sizeof(buf));
      tmpl_fail(NULL, "the fork server cannot load the runtime's %s: %s", runtime[k], buf);
    }
    Py_DECREF(m);
  }
  for (i = 0; i < n; i++) {
    m = PyImport_ImportModule(mods[i]);
    if (m == NULL) {
      char buf[KH__ERRMSG_MAX - 128];
      kh__py_describe_error(buf, sizeof(buf));
      tmpl_fail(mods[i], "pool.preload: module \"%s\" cannot be imported: %s", mods[i], buf);
    }
    Py_DECREF(m);
    if ((t = thread_count()) != 1)
      tmpl_fail(mods[i],
                "pool.preload: importing \"%s\" left the fork server with %d threads; a "
                "process with threads cannot be forked safely",
                mods[i], t);
  }
  kh__sandbox_precompile();
  /* The runtime's opening path run here enough times for the interpreter to specialise its
   * bytecode (3.11 rewrites a function's code in place while it warms up): children inherit
   * it done, instead of each writing, and so copying, those pages as a kernel opens. */
  m = PyImport_ImportModule("_kh_worker");
  for (k = 0; m != NULL && k < 16; k++) {
    r = PyObject_CallMethod(m, "rehearse", NULL);
    Py_XDECREF(r);
  }
  Py_XDECREF(m);
  PyErr_Clear();
  m = PyImport_ImportModule("gc");
  r = m ? PyObject_CallMethod(m, "collect", NULL) : NULL;
  Py_XDECREF(r);
  r = m ? PyObject_CallMethod(m, "freeze", NULL) : NULL;
  Py_XDECREF(r);
  Py_XDECREF(m);
  PyErr_Clear();
}

/* The answer to one "fork": pid and the host's ends of the pipes, or an error. */
static void tmpl_answer(json_int_t seq, pid_t pid, const char *error, int to_w, int from_r) {
  json_t *o = json_pack("{s:s, s:I}", "t", kh__proto_name(KH__P_FORKED), "seq", seq);
  char *frame = NULL;
  size_t len = 0;
  if (o != NULL) {
    json_object_set_new(o, pid > 0 ? "pid" : "error",
                        pid > 0 ? json_integer(pid) : json_string(error));
    frame = kh__frame_encode(o, &len);
  }
  json_decref(o);
  if (frame == NULL) _exit(70);
  if (pid > 0) {
    union {
      struct cmsghdr h;
      char b[CMSG_SPACE(2 * sizeof(int))];
    } c;
    struct iovec iov = {frame, len};
    struct msghdr mh;
    int fds[2] = {to_w, from_r};
    ssize_t w;
    memset(&mh, 0, sizeof(mh));
    memset(&c, 0, sizeof(c));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = c.b;
    mh.msg_controllen = sizeof(c.b);
    c.h.cmsg_level = SOL_SOCKET;
    c.h.cmsg_type = SCM_RIGHTS;
    c.h.cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(&c.h), fds, sizeof(fds));
    /* The descriptors travel with the first byte; the rest of a frame cut short follows. */
    do w = sendmsg(tmpl_fd, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0) _exit(0); /* the host is gone */
    if ((size_t)w < len) {
      struct iovec rest = {frame + w, len - (size_t)w};
      write_iov_locked(&rest, 1);
    }
  } else {
    struct iovec all = {frame, len};
    write_iov_locked(&all, 1);
  }
  free(frame);
}

/* In a new child: the pipes become fds 3 and 4, as a spawned worker's are, and nothing else of
 * the template's stays open (its socket, its copies of other children's pipes, whatever a
 * preload module opened). Its own session and process group, as UV_PROCESS_DETACHED gives a
 * spawned worker; the host's death kills it, as it kills a spawned one. */
static void tmpl_child(int cmd_r, int frame_w, pid_t host, int pooled, const char *pids_cgroup) {
  PyObject *m, *r;
  if (dup2(cmd_r, 3) < 0 || dup2(frame_w, 4) < 0) _exit(70);
  if (syscall(SYS_close_range, 5u, ~0u, 0u) != 0) {
    int fd;
    for (fd = 5; fd < 1024; fd++) close(fd);
  }
  tmpl_fd = in_fd = out_fd = diag_fd = -1;
  kh__frame_dec_free(&cmd_dec);
  kh__frame_dec_init(&cmd_dec, 0);
  setsid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != host) _exit(0);
  /* A worker the pool keeps waiting joins its own pids cgroup now, before "hello": the move
   * waits for an RCU grace period, which a kernel claiming it later then does not. It only
   * holds the group (pids.max stays "max") until a kernel's limits.maxProcesses sets it;
   * failing here is harmless: sandbox-apply.c joins, or reports why, when a kernel needs it. */
  if (pids_cgroup != NULL && *pids_cgroup) {
    char dir[300], f[340], num[32];
    snprintf(dir, sizeof(dir), "%s/w-%d", pids_cgroup, (int)getpid());
    snprintf(f, sizeof(f), "%s/cgroup.procs", dir);
    snprintf(num, sizeof(num), "%d", (int)getpid());
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) kh__sandbox_write_file(f, num);
  }
  /* Python's `random` reseeded itself in PyOS_AfterFork_Child (os.register_at_fork); numpy's
   * legacy global RandomState, seeded from the OS once at import, does not: two kernels
   * would draw the same np.random.rand(). */
  m = PyImport_ImportModule("sys");
  r = m ? PyObject_GetAttrString(m, "modules") : NULL;
  Py_XDECREF(m);
  m = r ? PyDict_GetItemString(r, "numpy.random") : NULL;
  if (m != NULL) {
    PyObject *x = PyObject_CallMethod(m, "seed", NULL);
    if (x == NULL) fatal("reseeding numpy.random failed");
    Py_DECREF(x);
  }
  Py_XDECREF(r);
  /* The one-thread requests were the template's, not the kernel's. */
  if (one_thread_set) {
    PyObject *os = PyImport_ImportModule("os"), *env = os ? PyObject_GetAttrString(os, "environ") : NULL;
    size_t i;
    for (i = 0; i < N_ONE_THREAD_VARS; i++) {
      if (!(one_thread_set & (1u << i))) continue;
      r = env ? PyObject_CallMethod(env, "pop", "sO", one_thread_vars[i], Py_None) : NULL;
      Py_XDECREF(r);
      unsetenv(one_thread_vars[i]);
    }
    Py_XDECREF(env);
    Py_XDECREF(os);
    PyErr_Clear();
  }
  /* A worker for the pool: as root, an empty network namespace waits for a kernel without
   * network (sandbox-apply.c). (Rehearsing a kernel's opening here as well, to copy the pages it
   * touches ahead of need, measured within the noise for a sandboxed claim and cost every
   * pooled kernel ~350 KB of private memory: the template's rehearsal is the one kept.) */
  if (pooled) kh__sandbox_prepare_netns();
}

/* After the kernel opened (its sandbox on, its env applied): OpenBLAS, if it is the BLAS and
 * was held to one thread by the template, gets the count a spawned worker's would have had. */
static void blas_restore(void) {
  static const char *const libs[] = {"libopenblas.so.0", "libopenblasp.so.0", "libblas.so.3"};
  const char *v = getenv("OPENBLAS_NUM_THREADS");
  long n = v != NULL ? atol(v) : sysconf(_SC_NPROCESSORS_ONLN);
  size_t i;
  if (!(one_thread_set & 1u) || n <= 1) return;
  for (i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
    void *h = dlopen(libs[i], RTLD_NOW | RTLD_NOLOAD);
    void (*set)(int) = h ? (void (*)(int))dlsym(h, "openblas_set_num_threads") : NULL;
    if (h != NULL) dlclose(h);
    if (set != NULL) {
      set((int)n);
      return;
    }
  }
}

/* The template's life: requests until the host goes away; returns only in a new child. */
static void tmpl_serve(pid_t host) {
  pid_t *tid_addr = NULL;
  /* glibc's record of this thread's id, which its fork() updates in the child: a raw clone must
   * do the same (CLONE_CHILD_SETTID), or the child's pthread_kill() of its main thread, the
   * worker's interrupt, would target the template's id. */
  if (prctl(PR_GET_TID_ADDRESS, &tid_addr) != 0 || tid_addr == NULL)
    tmpl_fail(NULL, "the fork server cannot find its thread id (PR_GET_TID_ADDRESS): %s",
              strerror(errno));
  for (;;) {
    char why[160];
    json_t *msg = read_first_frame();
    json_int_t seq;
    int cmd[2], frm[2], t;
    long pid;
    char cgroup[256];
    int pooled;
    if (kh__proto_check(msg, KH__P_TO_WORKER, 0, why, sizeof(why)) != KH__P_FORK)
      fatal("fork server: expected \"fork\": %s", why);
    seq = json_integer_value(json_object_get(msg, "seq"));
    pooled = json_is_true(json_object_get(msg, "pooled"));
    snprintf(cgroup, sizeof(cgroup), "%s",
             json_is_string(json_object_get(msg, "pids_cgroup"))
                 ? json_string_value(json_object_get(msg, "pids_cgroup"))
                 : "");
    json_decref(msg);
    if ((t = thread_count()) != 1) {
      tmpl_fail(NULL, "the fork server has %d threads; a process with threads cannot be forked "
                      "safely", t);
    }
    if (pipe2(cmd, O_CLOEXEC) != 0) {
      tmpl_answer(seq, 0, strerror(errno), -1, -1);
      continue;
    }
    if (pipe2(frm, O_CLOEXEC) != 0) {
      tmpl_answer(seq, 0, strerror(errno), -1, -1);
      close(cmd[0]);
      close(cmd[1]);
      continue;
    }
    PyOS_BeforeFork();
    pid = syscall(SYS_clone, (unsigned long)(CLONE_PARENT | CLONE_CHILD_SETTID |
                                             CLONE_CHILD_CLEARTID | SIGCHLD),
                  NULL, NULL, tid_addr, NULL);
    if (pid == 0) {
      PyOS_AfterFork_Child();
      tmpl_child(cmd[0], frm[1], host, pooled, cgroup);
      return;
    }
    PyOS_AfterFork_Parent();
    if (pid < 0)
      tmpl_answer(seq, 0, strerror(errno), -1, -1);
    else
      tmpl_answer(seq, (pid_t)pid, NULL, cmd[1], frm[0]);
    close(cmd[0]);
    close(cmd[1]);
    close(frm[0]);
    close(frm[1]);
  }
}

/* The template's start: its socket above 10, fds 3 and 4 kept busy (so that a child's pipes
 * never land on them before its dup2s), the one-thread requests, Python, the modules. */
static void tmpl_start(int nmods, char **mods) {
  size_t i;
  int nul;
  tmpl_fd = fcntl(3, F_DUPFD_CLOEXEC, 10);
  diag_fd = fcntl(2, F_DUPFD_CLOEXEC, 10);
  if (tmpl_fd < 0) {
    diag("kernelhost-worker: fd 3 must be the host's socket; this program is started by "
         "libkernelhost, not by hand");
    _exit(2);
  }
  in_fd = out_fd = tmpl_fd;
  nul = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 3) < 0 || dup2(nul, 4) < 0)
    fatal("/dev/null: %s", strerror(errno));
  close(nul);
  for (i = 0; i < N_ONE_THREAD_VARS; i++) {
    if (getenv(one_thread_vars[i]) != NULL) continue;
    setenv(one_thread_vars[i], "1", 1);
    one_thread_set |= 1u << i;
  }
}

/* The open message's "sandbox" plan: confines this process (still single-threaded), then
 * installs the Python layer. On failure the host hears why in a "ready" frame and the worker
 * exits: it never runs a kernel unconfined. *report gets {layers, missing} (owned). */
static void apply_sandbox(const json_t *plan, json_t **report) {
  char err[KH__ERRMSG_MAX] = "";
  json_t *limits = json_object_get(plan, "limits");
  json_t *mo = json_object_get(limits, "max_output_bytes");
  PyObject *mod = NULL, *json = NULL, *d = NULL, *r = NULL;
  char *s = NULL;
  int rc;
  if (json_is_integer(mo) && json_integer_value(mo) >= 0) {
    cap_limit = (uint64_t)json_integer_value(mo);
    cap_limited = 1;
  }
  rc = kh__sandbox_apply(plan, report, err);
  if (rc == 0) {
    s = json_dumps(plan, JSON_COMPACT);
    mod = PyImport_ImportModule("_kh_sandbox");
    json = mod ? PyImport_ImportModule("json") : NULL;
    d = json && s ? PyObject_CallMethod(json, "loads", "s", s) : NULL;
    r = d ? PyObject_CallMethod(mod, "install", "O", d) : NULL;
    if (r == NULL) {
      char buf[KH__ERRMSG_MAX - 64];
      kh__py_describe_error(buf, sizeof(buf));
      snprintf(err, sizeof(err), "sandbox: installing the Python layer failed: %s", buf);
      rc = KH_ENOTSUP;
    }
    Py_XDECREF(r);
    Py_XDECREF(d);
    Py_XDECREF(json);
    Py_XDECREF(mod);
    free(s);
  }
  if (rc != 0) {
    json_t *o =
        json_pack("{s:s, s:s, s:i}", "t", kh__proto_name(KH__P_READY), "error", err, "code", rc);
    diag("kernelhost-worker: %s", err);
    if (o != NULL) write_json(o);
    json_decref(o);
    _exit(71);
  }
}

int main(int argc, char **argv) {
  char err[KH__ERRMSG_MAX];
  json_t *hello, *first, *report = NULL;
  kh__pmsg_t kind;
  pid_t host;
  int template = argc >= 3 && strcmp(argv[1], "--kernelhost-template") == 0;
  main_tid = pthread_self();
  if (argc < 3 || (!template && strcmp(argv[1], "--kernelhost-worker") != 0)) {
    fprintf(stderr,
            "usage: kernelhost-worker --kernelhost-worker PARENT_PID\n"
            "       kernelhost-worker --kernelhost-template PARENT_PID [MODULE...]\n"
            "This program is started by libkernelhost for worker-mode kernels.\n");
    return 2;
  }
  host = (pid_t)atol(argv[2]);
  /* No orphans: die with the host. PDEATHSIG follows the host thread that spawned us (the
   * loop thread, which lives as long as the manager), and the check below closes the race
   * with a host that died before prctl ran. EOF on the command pipe is the second net. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != host) _exit(0);
  kh__frame_dec_init(&cmd_dec, 0);
  if (template) {
    json_t *ok;
    tmpl_start(argc - 3, argv + 3);
    if (start_python(err) != 0) tmpl_fail(NULL, "%s", err);
    tmpl_preload(argc - 3, argv + 3);
    ok = json_pack("{s:s, s:i, s:s}", "t", kh__proto_name(KH__P_HELLO), "pid", (int)getpid(),
                   "python", PY_VERSION);
    write_json(ok);
    json_decref(ok);
    tmpl_serve(host); /* returns in a new worker */
  }
  setup_fds();
  if (pthread_atfork(NULL, NULL, forked_child) != 0) fatal("pthread_atfork failed");
  if (!template && start_python(err) != 0) fatal("%s", err);
  hello = json_pack("{s:s, s:i, s:s}", "t", kh__proto_name(KH__P_HELLO), "pid", (int)getpid(),
                    "python", PY_VERSION);
  write_json(hello);
  json_decref(hello);
  /* Still one thread: the sandbox (namespaces, Landlock, seccomp) binds only the calling
   * thread and what it starts later, so the command and capture threads start after it. */
  first = read_first_frame();
  kind = kh__proto_check(first, KH__P_TO_WORKER, 0, err, sizeof(err));
  if (kind != KH__P_OPEN) fatal("expected \"open\", got %s", kind ? kh__proto_name(kind) : err);
  if (json_is_object(json_object_get(first, "sandbox")))
    apply_sandbox(json_object_get(first, "sandbox"), &report);
  kh__sandbox_release_netns();
  /* From here both the main thread (while idle) and the command thread read the pipe. */
  q_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q_efd < 0) fatal("eventfd: %s", strerror(errno));
  if (fcntl(in_fd, F_SETFL, fcntl(in_fd, F_GETFL) | O_NONBLOCK) < 0)
    fatal("command pipe: %s", strerror(errno));
  start_thread(command_thread);
  start_thread(capture_thread);
  do_open(first, report);
  blas_restore();
  json_decref(report);
  json_decref(first);
  for (;;) {
    cmd_t *c = next_command();
    /* pump_commands() checked its shape; "open" came once, before this loop (protocol.h). */
    kind = kh__proto_kind(json_string_value(json_object_get(c->msg, "t")));
    if (kind == KH__P_EXEC || kind == KH__P_COMM)
      do_exec(c->msg, kind, &c->bufs);
    else
      fatal("unexpected command \"%s\"", kh__proto_name(kind));
    json_decref(c->msg);
    kh__bufs_free(&c->bufs);
    free(c);
  }
}
