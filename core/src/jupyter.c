/* jupyter.c: one kernel served over Jupyter's wire protocol 5.3 (kh_jupyter_serve). Thread:
 * loop.
 *
 * Five ZeroMQ sockets: shell, control and stdin are ROUTERs, iopub an XPUB (so that a new
 * subscriber gets an iopub_welcome, JEP 65), heartbeat a REP that echoes. Each socket's ZMQ_FD
 * is watched by a uv_poll on the manager's loop. That descriptor is edge-triggered: it signals
 * when the socket's state changes, not while messages wait, so every wake-up drains each socket
 * until ZMQ_EVENTS says nothing is left, and every send (which can consume the edge) schedules
 * one more drain from an idle handle.
 *
 * Requests become the kernel's own API calls (kh_kernel_execute, kh_kernel_complete, ...) and
 * the kernel's events become iopub messages. A request keeps its header and routing ids until
 * its reply is sent, so that everything it causes carries it as parent header; events of
 * requests that are not the wire's (the host's own cells) are published with a parent header of
 * session "kernelhost-host", as another client's. The kernel's idle status of an execute request
 * reaches the bus before its reply reaches the request's callback; the server holds that idle
 * back until it has sent execute_reply, as ipykernel orders them.
 *
 * Messages arriving while the kernel starts or restarts wait in order (parked) until it is
 * ready. Editor requests (complete, inspect, ...) are answered while a cell runs, as the core
 * serves them; busy/idle is published around them only when no cell runs, so that a front end's
 * status never says idle under a running cell. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jupyter-internal.h"

enum { S_SHELL, S_CONTROL, S_STDIN, S_IOPUB, S_HB, S_COUNT };
static const char *const sock_names[S_COUNT] = {"shell", "control", "stdin", "iopub", "hb"};
static const char *const port_keys[S_COUNT] = {"shell_port", "control_port", "stdin_port",
                                               "iopub_port", "hb_port"};
static const int sock_types[S_COUNT] = {ZMQ_ROUTER, ZMQ_ROUTER, ZMQ_ROUTER, ZMQ_XPUB, ZMQ_REP};

#define DRAIN_BUDGET 256 /* messages per socket per turn: the host's loop keeps turning */
#define LINGER_MS 1000   /* what a stopping server still gives its last replies */
/* The largest frame a peer may send: a comm buffer's limit (256 MiB) and some; a peer that
 * sends more is disconnected by ZeroMQ before the server allocates it. */
#define MAX_FRAME ((int64_t)260 << 20)
static const char host_session[] = "kernelhost-host";

typedef enum { R_EXECUTE, R_COMM, R_OTHER } rkind_t;

typedef struct req_s {
  struct req_s *next;
  kh_jupyter_t *s; /* NULL once the server stopped: the pending callback only frees */
  int chan;        /* S_SHELL or S_CONTROL: where the reply goes */
  rkind_t kind;
  char exec_id[KH__EXEC_ID_MAX]; /* execute and comm requests */
  kh__jframes_t idents;
  json_t *header; /* the request's header: every message it causes has it as parent */
  char reply_type[64];
  char started[48];
  char *code;
  int silent, allow_stdin;
  int count; /* execute_input's execution_count, known when the request started */
  int cb_pending;  /* the core owes its callback */
  int busy_sent;   /* a busy status went out for it */
  int idle_sent;   /* ... and its idle */
  int idle_held;   /* the kernel's idle arrived before the reply */
  int status_pair; /* R_OTHER: busy went out, idle follows the reply */
} req_t;

typedef struct parked_s {
  struct parked_s *next;
  int chan;
  kh__jmsg_t msg;
} parked_t;

struct kh_jupyter_s {
  kh_manager_t *m;
  kh_jupyter_t *next; /* in m->servers */
  char kernel_id[KH__ID_MAX];
  kh_jupyter_cb cb;
  void *data;
  kh__jwire_t wire;
  void *ctx;
  void *sock[S_COUNT];
  uv_poll_t poll[S_COUNT];
  uv_idle_t idle; /* one more drain after a send */
  uv_work_t term; /* zmq_ctx_term off the loop: it waits for the last replies to go out */
  int npolls;     /* poll handles initialised */
  int handles;    /* handles not yet closed */
  int stopping;
  int draining, redrain;
  int shutdown_mode; /* 0 stop, 1 destroy, 2 none */
  int64_t sub_id;
  json_t *conn;    /* the connection file's content */
  char *conn_file; /* the file written, removed at stop; NULL when none */
  req_t *reqs;
  parked_t *parked_head, *parked_tail;
  uint64_t messages, dropped;
  /* A request that started inside the kh_kernel_execute that queued it, before its id was
   * known here: its id and counter, for handle_execute to pick up. */
  char started_id[KH__EXEC_ID_MAX];
  int started_count;
};

static void drain(kh_jupyter_t *s);
static void handle(kh_jupyter_t *s, int chan, kh__jmsg_t *msg);
static const kh__jupyter_hooks_t hooks;

/* --- small things ---------------------------------------------------------------------------- */

static kh_kernel_t *kernel_of(kh_jupyter_t *s) {
  kh_kernel_t *k = kh__manager_find(s->m, s->kernel_id);
  return k != NULL && k->state != KH__K_CLOSING ? k : NULL;
}

static void on_idle(uv_idle_t *h) {
  kh_jupyter_t *s = h->data;
  uv_idle_stop(h);
  drain(s);
}

/* Sending can take the edge of a socket's descriptor: look at every socket again soon. */
static void kick(kh_jupyter_t *s) {
  if (s->stopping) return;
  if (s->draining)
    s->redrain = 1;
  else
    uv_idle_start(&s->idle, on_idle);
}

static int has_input(void *sock);
static void subscriptions(kh_jupyter_t *s);

static int send_to(kh_jupyter_t *s, int chan, const kh__jframes_t *idents, const char *msg_type,
                   const json_t *parent, const json_t *metadata, const char *content, size_t len,
                   const kh__jbuf_t *bufs, size_t nbufs) {
  char topic[KH__ID_MAX + 96];
  int rc;
  if (s->stopping && chan == S_IOPUB) return 0;
  /* A subscription ZeroMQ has taken since the last drain is welcomed before anything else
   * reaches that subscriber: ZMQ_EVENTS makes the socket apply it, and queue it for us. */
  if (chan == S_IOPUB && strcmp(msg_type, "iopub_welcome") != 0)
    while (has_input(s->sock[S_IOPUB])) subscriptions(s);
  if (chan == S_IOPUB) snprintf(topic, sizeof(topic), "kernel.%s.%s", s->kernel_id, msg_type);
  rc = kh__jwire_send(&s->wire, s->sock[chan], idents, chan == S_IOPUB ? topic : NULL, msg_type,
                      parent, metadata, content, len, bufs, nbufs);
  kick(s);
  return rc;
}

/* Sends a JSON object as the content (stolen). */
static void send_json(kh_jupyter_t *s, int chan, const kh__jframes_t *idents,
                      const char *msg_type, const json_t *parent, const json_t *metadata,
                      json_t *content) {
  char *text = content ? json_dumps(content, JSON_COMPACT) : NULL;
  if (text != NULL)
    send_to(s, chan, idents, msg_type, parent, metadata, text, strlen(text), NULL, 0);
  free(text);
  json_decref(content);
}

static void publish_status(kh_jupyter_t *s, const char *state, const json_t *parent) {
  json_t *c = json_pack("{s:s}", "execution_state", state);
  send_json(s, S_IOPUB, NULL, "status", parent, NULL, c);
}

/* An error reply's content: {status: "error", ename, evalue, traceback: []}. */
static json_t *error_content(const char *ename, const char *evalue) {
  return json_pack("{s:s, s:s, s:s, s:[]}", "status", "error", "ename", ename, "evalue",
                   evalue ? evalue : "");
}

/* --- requests in flight ---------------------------------------------------------------------- */

static req_t *req_new(kh_jupyter_t *s, int chan, kh__jmsg_t *msg, rkind_t kind) {
  req_t *r = calloc(1, sizeof(*r));
  size_t n;
  if (r == NULL) return NULL;
  r->s = s;
  r->chan = chan;
  r->kind = kind;
  r->idents = msg->idents; /* taken over */
  memset(&msg->idents, 0, sizeof(msg->idents));
  r->header = json_incref(msg->header);
  n = strlen(msg->msg_type);
  if (n > 8 && strcmp(msg->msg_type + n - 8, "_request") == 0 && n < sizeof(r->reply_type))
    snprintf(r->reply_type, sizeof(r->reply_type), "%.*s_reply", (int)(n - 8), msg->msg_type);
  kh__jwire_date(r->started, sizeof(r->started));
  r->next = s->reqs;
  s->reqs = r;
  return r;
}

static void req_unlink(req_t *r) {
  req_t **p;
  if (r->s == NULL) return;
  for (p = &r->s->reqs; *p; p = &(*p)->next)
    if (*p == r) {
      *p = r->next;
      break;
    }
  r->s = NULL;
}

static void req_free(req_t *r) {
  req_unlink(r);
  kh__jframes_free(&r->idents);
  json_decref(r->header);
  free(r->code);
  free(r);
}

static req_t *req_find(kh_jupyter_t *s, const char *exec_id) {
  req_t *r;
  if (exec_id == NULL || !*exec_id) return NULL;
  for (r = s->reqs; r; r = r->next)
    if (r->kind != R_OTHER && strcmp(r->exec_id, exec_id) == 0) return r;
  return NULL;
}

static void reply(kh_jupyter_t *s, req_t *r, json_t *content) {
  send_json(s, r->chan, &r->idents, r->reply_type, r->header, NULL, content);
}

/* --- the kernel's events on iopub -------------------------------------------------------------- */

/* Sets `v` (stolen) at the JSON Pointer `path` of doc. */
static void pointer_set(json_t *doc, const char *path, json_t *v) {
  const char *slash = strrchr(path, '/');
  char parent_path[512], key[512];
  size_t n, i, j;
  json_t *parent;
  if (slash == NULL || (size_t)(slash - path) >= sizeof(parent_path)) {
    json_decref(v);
    return;
  }
  n = (size_t)(slash - path);
  memcpy(parent_path, path, n);
  parent_path[n] = '\0';
  for (i = 1, j = 0; slash[i] && j + 1 < sizeof(key); i++) {
    char c = slash[i];
    if (c == '~' && (slash[i + 1] == '0' || slash[i + 1] == '1')) c = slash[++i] == '0' ? '~' : '/';
    key[j++] = c;
  }
  key[j] = '\0';
  parent = kh__json_pointer(doc, parent_path);
  if (json_is_object(parent))
    json_object_set_new(parent, key, v);
  else if (json_is_array(parent))
    json_array_set_new(parent, strtoul(key, NULL, 10), v);
  else
    json_decref(v);
}

/* An event as the content of its iopub message: binary values go into the JSON as base64
 * (Jupyter's display data), except a comm's buffers, which become the message's binary frames;
 * a comm's "metadata" member is the message's metadata. */
static void publish_event(kh_jupyter_t *s, const kh_event_t *ev, const json_t *parent) {
  int comm = ev->type == KH_EVENT_COMM_OPEN || ev->type == KH_EVENT_COMM_MSG ||
             ev->type == KH_EVENT_COMM_CLOSE;
  const char *msg_type = ev->type == KH_EVENT_EXECUTE_ERROR ? "error" : ev->type_name;
  json_t *doc, *metadata = NULL, *arr;
  kh__jbuf_t bufs[64];
  unsigned char *owned[64];
  size_t nbufs = 0, nowned = 0, i;
  char *text;
  if (!comm && ev->nbuffers == 0) {
    send_to(s, S_IOPUB, NULL, msg_type, parent, NULL, ev->json, ev->json_len, NULL, 0);
    return;
  }
  if ((doc = json_loadb(ev->json, ev->json_len, 0, NULL)) == NULL) return;
  for (i = 0; i < ev->nbuffers; i++) {
    const kh_buffer_t *b = &ev->buffers[i];
    if (comm && strncmp(b->path, "/buffers/", 9) == 0) {
      size_t idx = strtoul(b->path + 9, NULL, 10);
      if (idx < 64) {
        bufs[idx].data = b->data;
        bufs[idx].len = b->len;
        if (idx + 1 > nbufs) nbufs = idx + 1;
      }
    } else {
      pointer_set(doc, b->path, kh__jwire_b64_string(b->data, b->len));
    }
  }
  if (comm) {
    metadata = json_incref(json_object_get(doc, "metadata"));
    json_object_del(doc, "metadata");
    arr = json_object_get(doc, "buffers");
    /* binary "base64": the buffers are base64 strings in the JSON */
    for (i = 0; ev->nbuffers == 0 && json_is_array(arr) && i < json_array_size(arr) && i < 64;
         i++) {
      json_t *v = json_array_get(arr, i);
      size_t n = 0;
      unsigned char *b = json_is_string(v) ? kh__jwire_b64_bytes(json_string_value(v),
                                                          json_string_length(v), &n)
                                           : NULL;
      owned[nowned++] = b;
      bufs[i].data = b ? (const void *)b : "";
      bufs[i].len = b ? n : 0;
      nbufs = i + 1;
    }
    json_object_del(doc, "buffers");
  }
  text = json_dumps(doc, JSON_COMPACT);
  if (text != NULL)
    send_to(s, S_IOPUB, NULL, msg_type, parent, metadata, text, strlen(text), bufs, nbufs);
  free(text);
  for (i = 0; i < nowned; i++) free(owned[i]);
  json_decref(metadata);
  json_decref(doc);
}

/* The parent of an event of the host's own request (or of none: "" ids, {} parent). */
static json_t *host_parent(kh_jupyter_t *s, const char *exec_id) {
  if (exec_id == NULL || !*exec_id) return json_object();
  return kh__jwire_header(&s->wire, "execute_request", host_session, exec_id, "host");
}

static void on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  kh_jupyter_t *s = data;
  req_t *r;
  const char *state = NULL;
  if (s->stopping) return;
  if (ev->type == KH_EVENT_STATUS) {
    json_t *doc = json_loadb(ev->json, ev->json_len, 0, NULL);
    static const char *const known[] = {"busy", "idle", "starting", "restarting", "dead"};
    const char *st = json_string_value(json_object_get(doc, "execution_state"));
    size_t i;
    for (i = 0; st != NULL && i < sizeof(known) / sizeof(known[0]); i++)
      if (strcmp(st, known[i]) == 0) state = known[i];
    json_decref(doc);
  }
  r = req_find(s, ev->execution_id);
  if (r == NULL) {
    json_t *parent;
    if (ev->type == KH_EVENT_INPUT_REQUEST) return; /* the host's cell: the host answers */
    parent = host_parent(s, ev->execution_id);
    publish_event(s, ev, parent);
    json_decref(parent);
  } else if (state != NULL && strcmp(state, "busy") == 0) {
    publish_event(s, ev, r->header);
    r->busy_sent = 1;
    if (r->kind == R_EXECUTE && !r->silent && r->code != NULL) {
      json_t *c = json_pack("{s:s, s:i}", "code", r->code, "execution_count", r->count);
      send_json(s, S_IOPUB, NULL, "execute_input", r->header, NULL, c);
    }
  } else if (state != NULL && strcmp(state, "idle") == 0) {
    if (r->kind == R_EXECUTE && r->cb_pending) {
      r->idle_held = 1;
    } else {
      publish_event(s, ev, r->header);
      r->idle_sent = 1;
      if (r->kind == R_COMM) req_free(r);
    }
  } else if (ev->type == KH_EVENT_INPUT_REQUEST) {
    if (r->allow_stdin)
      send_to(s, S_STDIN, &r->idents, "input_request", r->header, NULL, ev->json, ev->json_len,
              NULL, 0);
  } else {
    publish_event(s, ev, r->header);
  }
  /* A kernel that became ready takes what waited for it. */
  if (s->parked_head != NULL && state != NULL) kick(s);
}

/* --- execute --------------------------------------------------------------------------------- */

static void on_executed(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  req_t *r = data;
  kh_jupyter_t *s = r->s;
  json_t *content, *md;
  const char *st;
  r->cb_pending = 0;
  if (s == NULL || s->stopping) {
    req_free(r);
    return;
  }
  if (status == KH_ECANCELED || (status == 0 && strcmp(rep->status, "aborted") == 0)) {
    st = "aborted";
    content = json_pack("{s:s}", "status", st);
  } else if (status != 0) {
    st = "error";
    content = error_content(status == KH_EKERNELDEAD ? "DeadKernelError" : kh_err_name(status),
                            rep->errmsg);
    json_object_set_new(content, "execution_count", json_integer(rep->execution_count));
  } else {
    st = rep->status;
    content = json_pack("{s:s, s:i, s:[], s:{}}", "status", st, "execution_count",
                        rep->execution_count, "payload", "user_expressions");
    if (strcmp(st, "error") == 0) {
      json_t *doc = json_loadb(rep->json, rep->json_len, 0, NULL);
      json_t *err = json_object_get(doc, "error");
      const char *key;
      json_t *v;
      json_object_foreach(err, key, v) {
        if (strcmp(key, "ename") == 0 || strcmp(key, "evalue") == 0 ||
            strcmp(key, "traceback") == 0)
          json_object_set(content, key, v);
      }
      json_decref(doc);
    }
  }
  /* A request that never ran (aborted, or failed before its cell) still gets busy and idle
   * around its reply, as ipykernel brackets every request. */
  if (!r->busy_sent) {
    publish_status(s, "busy", r->header);
    r->busy_sent = 1;
  }
  md = json_pack("{s:s, s:b, s:s, s:s}", "started", r->started, "dependencies_met", 1, "engine",
                 s->wire.session, "status", st);
  send_json(s, r->chan, &r->idents, "execute_reply", r->header, md, content);
  json_decref(md);
  if (!r->idle_sent) publish_status(s, "idle", r->header);
  req_free(r);
}

static void handle_execute(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  json_t *c = msg->content;
  json_t *code = json_object_get(c, "code");
  json_t *v;
  kh_execute_options_t o;
  req_t *r;
  int rc;
  kh_execute_options_init(&o);
  if ((v = json_object_get(c, "silent")) != NULL) o.silent = json_is_true(v);
  o.store_history = !o.silent;
  if ((v = json_object_get(c, "store_history")) != NULL && json_is_boolean(v))
    o.store_history = json_is_true(v);
  if ((v = json_object_get(c, "stop_on_error")) != NULL && json_is_boolean(v))
    o.stop_on_error = json_is_true(v);
  if ((v = json_object_get(c, "allow_stdin")) != NULL && json_is_boolean(v))
    o.allow_stdin = json_is_true(v);
  if ((r = req_new(s, chan, msg, R_EXECUTE)) == NULL) return;
  r->silent = o.silent;
  r->allow_stdin = o.allow_stdin;
  if (!json_is_string(code)) {
    rc = KH_EINVAL;
    kh__set_err(s->m->errmsg, "execute_request without a code string");
  } else {
    r->code = kh__memdup(json_string_value(code), json_string_length(code) + 1);
    rc = r->code ? kh_kernel_execute(s->m, s->kernel_id, r->code, json_string_length(code), &o,
                                     r->exec_id, sizeof(r->exec_id), on_executed, r)
                 : KH_ENOMEM;
  }
  if (rc == 0) {
    r->cb_pending = 1;
    if (strcmp(s->started_id, r->exec_id) == 0) r->count = s->started_count;
    s->started_id[0] = '\0';
    return;
  }
  /* Refused before it ran: answered now, the way a failed cell is. */
  {
    kh_reply_t rep;
    kh_kernel_t *k = kernel_of(s);
    memset(&rep, 0, sizeof(rep));
    rep.errmsg = s->m->errmsg;
    rep.execution_count = k ? k->execution_count : 0;
    r->cb_pending = 1;
    on_executed(s->m, &rep, rc, r);
  }
}

/* --- editor requests and the rest of shell -------------------------------------------------- */

static void on_answer(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                      size_t len, const char *errmsg, void *data) {
  req_t *r = data;
  kh_jupyter_t *s = r->s;
  kh_kernel_t *k;
  r->cb_pending = 0;
  if (s == NULL || s->stopping) {
    req_free(r);
    return;
  }
  if (status == 0)
    send_to(s, r->chan, &r->idents, r->reply_type, r->header, NULL, json, len, NULL, 0);
  else
    reply(s, r, error_content(status == UV_ETIMEDOUT ? "TimeoutError" : kh_err_name(status),
                              errmsg));
  k = kernel_of(s);
  if (r->status_pair && (k == NULL || k->state != KH__K_BUSY)) publish_status(s, "idle", r->header);
  req_free(r);
}

/* busy now and idle after the reply, when no cell runs (see the top of the file). */
static void bracket(kh_jupyter_t *s, req_t *r) {
  kh_kernel_t *k = kernel_of(s);
  if (r->chan == S_SHELL && k != NULL && k->state == KH__K_IDLE) {
    publish_status(s, "busy", r->header);
    r->status_pair = 1;
  }
}

static int64_t cursor_of(const json_t *c) {
  json_t *v = json_object_get(c, "cursor_pos");
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* The history_request's fields the core reads; "raw" has no meaning here (cells are kept as
 * typed). */
static char *history_request(const json_t *c) {
  static const char *const keys[] = {"hist_access_type", "output", "session", "start", "stop",
                                     "n", "pattern", "unique"};
  json_t *q = json_object();
  char *text;
  size_t i;
  for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    json_t *v = json_object_get(c, keys[i]);
    if (v != NULL && !json_is_null(v)) json_object_set(q, keys[i], v);
  }
  text = json_dumps(q, JSON_COMPACT);
  json_decref(q);
  return text;
}

static void handle_editor(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  json_t *c = msg->content;
  json_t *code = json_object_get(c, "code");
  const char *t = msg->msg_type;
  const char *text = json_is_string(code) ? json_string_value(code) : "";
  size_t len = json_is_string(code) ? json_string_length(code) : 0;
  req_t *r = req_new(s, chan, msg, R_OTHER);
  int rc;
  if (r == NULL) return;
  bracket(s, r);
  r->cb_pending = 1;
  if (strcmp(t, "kernel_info_request") == 0) {
    rc = kh_kernel_kernel_info(s->m, s->kernel_id, 0, on_answer, r);
  } else if (strcmp(t, "complete_request") == 0) {
    rc = kh_kernel_complete(s->m, s->kernel_id, text, len, cursor_of(c), 0, on_answer, r);
  } else if (strcmp(t, "inspect_request") == 0) {
    json_t *d = json_object_get(c, "detail_level");
    rc = kh_kernel_inspect(s->m, s->kernel_id, text, len, cursor_of(c),
                           json_is_integer(d) ? (int)json_integer_value(d) : 0, 0, on_answer, r);
  } else if (strcmp(t, "is_complete_request") == 0) {
    rc = kh_kernel_is_complete(s->m, s->kernel_id, text, len, 0, on_answer, r);
  } else {
    char *q = history_request(c);
    rc = q ? kh_kernel_history(s->m, s->kernel_id, q, on_answer, r) : KH_ENOMEM;
    free(q);
  }
  if (rc != 0) on_answer(s->m, s->kernel_id, rc, NULL, 0, s->m->errmsg, r);
}

static void handle_comm_info(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  kh_kernel_t *k = kernel_of(s);
  json_t *target = json_object_get(msg->content, "target_name");
  json_t *comms = json_object();
  const char *id;
  json_t *v;
  req_t *r = req_new(s, chan, msg, R_OTHER);
  if (r == NULL) {
    json_decref(comms);
    return;
  }
  bracket(s, r);
  if (k != NULL && k->comms != NULL) json_object_foreach(k->comms, id, v) {
      if (json_is_string(target) && strcmp(json_string_value(target), json_string_value(v)) != 0)
        continue;
      json_object_set_new(comms, id, json_pack("{s:O}", "target_name", v));
    }
  reply(s, r, json_pack("{s:s, s:o}", "status", "ok", "comms", comms));
  if (r->status_pair) publish_status(s, "idle", r->header);
  req_free(r);
}

/* A front end's comm message: its binary frames become the content's buffers, its metadata the
 * content's "metadata", as kh_kernel_comm_send takes them. No reply, as in Jupyter. */
static void handle_comm(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  json_t *c = json_deep_copy(msg->content);
  kh_buffer_t bufs[64];
  char paths[64][16];
  size_t n = msg->nbufs, i;
  req_t *r;
  char *text;
  int rc;
  if (c == NULL || n > 64) {
    json_decref(c);
    s->dropped++;
    return;
  }
  if (json_object_size(msg->metadata) > 0) json_object_set(c, "metadata", msg->metadata);
  json_object_del(c, "buffers");
  if (n > 0) {
    json_t *arr = json_array();
    for (i = 0; i < n; i++) {
      json_array_append_new(arr, json_null());
      snprintf(paths[i], sizeof(paths[i]), "/buffers/%zu", i);
      bufs[i].path = paths[i];
      bufs[i].data = zmq_msg_data(&msg->bufs[i]);
      bufs[i].len = zmq_msg_size(&msg->bufs[i]);
    }
    json_object_set_new(c, "buffers", arr);
  }
  text = json_dumps(c, JSON_COMPACT);
  json_decref(c);
  if (text == NULL || (r = req_new(s, chan, msg, R_COMM)) == NULL) {
    free(text);
    return;
  }
  rc = kh__comm_send(s->m, s->kernel_id, msg->msg_type, text, strlen(text), bufs, n, r->exec_id);
  free(text);
  /* A message on a comm that is not open, or a bad one: ipykernel drops it too. */
  if (rc != 0) req_free(r);
}

static void handle_shutdown(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  int restart = json_is_true(json_object_get(msg->content, "restart"));
  json_t *c = json_pack("{s:s, s:b}", "status", "ok", "restart", restart);
  req_t *r = req_new(s, chan, msg, R_OTHER);
  if (r == NULL) {
    json_decref(c);
    return;
  }
  /* On iopub too, as ipykernel does: every front end learns the kernel is going. */
  send_json(s, S_IOPUB, NULL, "shutdown_reply", r->header, NULL, json_incref(c));
  reply(s, r, c);
  req_free(r);
  if (s->cb != NULL) s->cb(s, KH_JUPYTER_SHUTDOWN, restart, s->data);
  if (s->stopping || s->shutdown_mode == 2) return;
  if (restart) {
    kh_kernel_restart(s->m, s->kernel_id, NULL, NULL);
  } else if (s->shutdown_mode == 1) {
    kh_kernel_destroy(s->m, s->kernel_id, NULL, NULL); /* stops this server too */
  } else {
    kh_jupyter_stop(s);
  }
}

static void handle_interrupt(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  req_t *r = req_new(s, chan, msg, R_OTHER);
  int rc = kh_kernel_interrupt(s->m, s->kernel_id);
  if (r == NULL) return;
  reply(s, r, rc == 0 ? json_pack("{s:s}", "status", "ok")
                      : error_content(kh_err_name(rc), s->m->errmsg));
  req_free(r);
}

static void handle_input_reply(kh_jupyter_t *s, kh__jmsg_t *msg) {
  json_t *v = json_object_get(msg->content, "value");
  if (json_is_string(v))
    kh_kernel_input_reply(s->m, s->kernel_id, json_string_value(v), json_string_length(v));
}

/* Whether a message must wait for the kernel to be ready. Interrupts and shutdowns never wait. */
static int must_park(kh_jupyter_t *s, int chan, const char *type) {
  kh_kernel_t *k;
  if (chan == S_STDIN || strcmp(type, "interrupt_request") == 0 ||
      strcmp(type, "shutdown_request") == 0)
    return 0;
  if (s->parked_head != NULL) return 1; /* behind those already waiting */
  k = kernel_of(s);
  return k != NULL && (k->state == KH__K_STARTING || k->state == KH__K_RESTARTING);
}

static void park(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  parked_t *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    kh__jmsg_free(msg);
    return;
  }
  p->chan = chan;
  p->msg = *msg;
  memset(msg, 0, sizeof(*msg));
  if (s->parked_tail)
    s->parked_tail->next = p;
  else
    s->parked_head = p;
  s->parked_tail = p;
}

static void dispatch(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  const char *t = msg->msg_type;
  s->messages++;
  if (chan == S_STDIN) {
    if (strcmp(t, "input_reply") == 0) handle_input_reply(s, msg);
  } else if (strcmp(t, "execute_request") == 0) {
    handle_execute(s, chan, msg);
  } else if (strcmp(t, "kernel_info_request") == 0 || strcmp(t, "complete_request") == 0 ||
             strcmp(t, "inspect_request") == 0 || strcmp(t, "is_complete_request") == 0 ||
             strcmp(t, "history_request") == 0) {
    handle_editor(s, chan, msg);
  } else if (strcmp(t, "comm_info_request") == 0) {
    handle_comm_info(s, chan, msg);
  } else if (strcmp(t, "comm_open") == 0 || strcmp(t, "comm_msg") == 0 ||
             strcmp(t, "comm_close") == 0) {
    handle_comm(s, chan, msg);
  } else if (strcmp(t, "shutdown_request") == 0) {
    handle_shutdown(s, chan, msg);
  } else if (strcmp(t, "interrupt_request") == 0) {
    handle_interrupt(s, chan, msg);
  } else {
    s->messages--; /* an unknown type is ignored, as ipykernel ignores it */
  }
}

static void handle(kh_jupyter_t *s, int chan, kh__jmsg_t *msg) {
  if (must_park(s, chan, msg->msg_type)) {
    park(s, chan, msg);
    return;
  }
  dispatch(s, chan, msg);
  kh__jmsg_free(msg);
}

static void unpark(kh_jupyter_t *s) {
  kh_kernel_t *k;
  while (s->parked_head != NULL && !s->stopping) {
    parked_t *p = s->parked_head;
    k = kernel_of(s);
    if (k != NULL && (k->state == KH__K_STARTING || k->state == KH__K_RESTARTING)) return;
    s->parked_head = p->next;
    if (s->parked_head == NULL) s->parked_tail = NULL;
    dispatch(s, p->chan, &p->msg);
    kh__jmsg_free(&p->msg);
    free(p);
  }
}

/* --- the sockets ------------------------------------------------------------------------------- */

static int has_input(void *sock) {
  int ev = 0;
  size_t n = sizeof(ev);
  return zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &n) == 0 && (ev & ZMQ_POLLIN);
}

/* Heartbeat: every message comes back as it was. */
static void echo(void *sock) {
  zmq_msg_t f;
  int more = 1;
  while (more) {
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&f);
      return;
    }
    more = zmq_msg_more(&f);
    zmq_msg_send(&f, sock, more ? ZMQ_SNDMORE : 0);
    zmq_msg_close(&f);
  }
}

/* XPUB: a subscription is byte 1 and the topic; each gets an iopub_welcome (JEP 65). */
static void subscriptions(kh_jupyter_t *s) {
  zmq_msg_t f;
  zmq_msg_init(&f);
  if (zmq_msg_recv(&f, s->sock[S_IOPUB], ZMQ_DONTWAIT) >= 0) {
    const unsigned char *d = zmq_msg_data(&f);
    size_t n = zmq_msg_size(&f);
    if (n >= 1 && d[0] == 1) {
      json_t *c = json_pack("{s:s#}", "subscription", (const char *)d + 1, (int)(n - 1));
      send_json(s, S_IOPUB, NULL, "iopub_welcome", NULL, NULL, c);
    }
  }
  zmq_msg_close(&f);
}

static void drain(kh_jupyter_t *s) {
  int chan, budget, more = 0;
  if (s->draining) {
    s->redrain = 1;
    return;
  }
  s->draining = 1;
  do {
    s->redrain = 0;
    unpark(s);
    for (chan = 0; chan < S_COUNT && !s->stopping; chan++) {
      for (budget = DRAIN_BUDGET; budget > 0 && !s->stopping && has_input(s->sock[chan]);
           budget--) {
        if (chan == S_HB) {
          echo(s->sock[chan]);
        } else if (chan == S_IOPUB) {
          subscriptions(s);
        } else {
          kh__jmsg_t msg;
          int rc = kh__jwire_recv(&s->wire, s->sock[chan], &msg);
          if (rc == 1)
            handle(s, chan, &msg);
          else if (rc != 0)
            s->dropped++;
        }
      }
      if (budget == 0) more = 1;
    }
  } while (s->redrain && !s->stopping);
  s->draining = 0;
  /* Out of budget: the rest on the next turn, after the host's own work. */
  if (more && !s->stopping) uv_idle_start(&s->idle, on_idle);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  drain(h->data);
}

/* --- starting ---------------------------------------------------------------------------------- */

static int errno_code(void) { return -zmq_errno(); }

/* Binds one socket to the connection's port for it (0: any), and writes the port back. */
static int bind_one(kh_jupyter_t *s, int chan, const char *transport, const char *ip) {
  char ep[512], last[512];
  size_t n = sizeof(last);
  json_t *pv = json_object_get(s->conn, port_keys[chan]);
  json_int_t port = json_is_integer(pv) ? json_integer_value(pv) : 0;
  if (strcmp(transport, "tcp") == 0) {
    if (port > 0)
      snprintf(ep, sizeof(ep), "tcp://%s:%d", ip, (int)port);
    else
      snprintf(ep, sizeof(ep), "tcp://%s:*", ip);
    if (zmq_bind(s->sock[chan], ep) != 0) goto fail;
    if (zmq_getsockopt(s->sock[chan], ZMQ_LAST_ENDPOINT, last, &n) != 0) goto fail;
    port = strtol(strrchr(last, ':') + 1, NULL, 10);
  } else {
    /* ipc: the endpoint is "<ip>-<port>", a path; port 0 takes the first free number. */
    if (port <= 0) {
      for (port = 1; port < 65536; port++) {
        snprintf(ep, sizeof(ep), "%s-%d", ip, (int)port);
        if (access(ep, F_OK) != 0) break;
      }
    }
    snprintf(ep, sizeof(ep), "ipc://%s-%d", ip, (int)port);
    if (zmq_bind(s->sock[chan], ep) != 0) goto fail;
  }
  json_object_set_new(s->conn, port_keys[chan], json_integer(port));
  return 0;
fail:
  kh__set_err(s->m->errmsg, "cannot bind the %s socket to %s: %s", sock_names[chan], ep,
              zmq_strerror(zmq_errno()));
  return errno_code();
}

/* Jupyter's runtime directory (jupyter_core's rules), created 0700 when missing. */
static int runtime_dir(char *out, size_t n, char *errmsg) {
  const char *e;
  char *p;
  if ((e = getenv("JUPYTER_RUNTIME_DIR")) != NULL && *e)
    snprintf(out, n, "%s", e);
  else if ((e = getenv("JUPYTER_DATA_DIR")) != NULL && *e)
    snprintf(out, n, "%s/runtime", e);
  else if ((e = getenv("XDG_DATA_HOME")) != NULL && *e)
    snprintf(out, n, "%s/jupyter/runtime", e);
  else if ((e = getenv("HOME")) != NULL && *e)
    snprintf(out, n, "%s/.local/share/jupyter/runtime", e);
  else {
    kh__set_err(errmsg, "no Jupyter runtime directory: set connectionFile or HOME");
    return KH_EOPTION;
  }
  for (p = out + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    mkdir(out, 0700);
    *p = '/';
  }
  if (mkdir(out, 0700) != 0 && errno != EEXIST) {
    kh__set_err(errmsg, "cannot create the Jupyter runtime directory %s: %s", out,
                strerror(errno));
    return -errno;
  }
  return 0;
}

/* The connection file, mode 0600 from its creation, put in place by rename: a reader never
 * sees half of it, nor a moment where others could read the key. */
static int write_conn_file(kh_jupyter_t *s, const char *path) {
  char tmp[4200];
  char *text = json_dumps(s->conn, JSON_INDENT(1) | JSON_SORT_KEYS);
  int fd, rc = 0;
  size_t len, off = 0;
  if (text == NULL) return KH_ENOMEM;
  len = strlen(text);
  snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) rc = -errno;
  if (fd >= 0 && fchmod(fd, 0600) != 0) rc = -errno;
  while (rc == 0 && off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) rc = -errno;
    else off += (size_t)w;
  }
  if (fd >= 0 && close(fd) != 0 && rc == 0) rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
  if (rc != 0) {
    unlink(tmp);
    kh__set_err(s->m->errmsg, "cannot write the connection file %s: %s", path, strerror(-rc));
  }
  free(text);
  return rc;
}

static int random_key(char *out) {
  unsigned char b[16];
  size_t i, got = 0;
  static const char digits[] = "0123456789abcdef";
  while (got < sizeof(b)) {
    ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    got += (size_t)n;
  }
  for (i = 0; i < sizeof(b); i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 15];
  }
  out[32] = '\0';
  return 0;
}

/* The connection: the option's object, completed with the top-level options and defaults. */
static int build_conn(kh_jupyter_t *s, const json_t *all, char *errmsg) {
  static const char *const top[] = {"ip", "transport", "key", "kernel_name"};
  const json_t *given = json_object_get(all, "connection");
  size_t i;
  char key[33];
  s->conn = given ? json_deep_copy(given) : json_object();
  if (s->conn == NULL) return KH_ENOMEM;
  for (i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
    json_t *v = json_object_get(all, top[i]);
    if (v == NULL) continue;
    if (json_object_get(s->conn, top[i]) != NULL) {
      kh__set_err(errmsg, "Jupyter server options '%s' and 'connection.%s' are both given",
                  top[i], top[i]);
      return KH_EOPTION;
    }
    json_object_set(s->conn, top[i], v);
  }
  if (!json_object_get(s->conn, "transport"))
    json_object_set_new(s->conn, "transport", json_string("tcp"));
  if (!json_object_get(s->conn, "ip")) json_object_set_new(s->conn, "ip", json_string("127.0.0.1"));
  if (!json_object_get(s->conn, "signature_scheme"))
    json_object_set_new(s->conn, "signature_scheme", json_string("hmac-sha256"));
  if (!json_object_get(s->conn, "kernel_name"))
    json_object_set_new(s->conn, "kernel_name", json_string("kernelhost"));
  if (!json_object_get(s->conn, "key")) {
    int rc = random_key(key);
    if (rc != 0) {
      kh__set_err(errmsg, "no random key from the OS: %s", strerror(-rc));
      return rc;
    }
    json_object_set_new(s->conn, "key", json_string(key));
  }
  return 0;
}

/* --- stopping ---------------------------------------------------------------------------------- */

static void after_term(uv_work_t *w, int status) {
  kh_jupyter_t *s = w->data;
  kh_manager_t *m = s->m;
  kh_jupyter_t **p;
  for (p = &m->servers; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  if (s->cb != NULL) s->cb(s, KH_JUPYTER_STOPPED, 0, s->data);
  kh__jwire_free(&s->wire);
  json_decref(s->conn);
  free(s->conn_file);
  free(s);
  m->pending--;
  kh__manager_kernel_gone(m); /* a close that waited for its servers can finish */
}

/* Off the loop: waits, up to LINGER_MS, for the last replies to leave. */
static void do_term(uv_work_t *w) {
  kh_jupyter_t *s = w->data;
  zmq_ctx_term(s->ctx);
}

static void on_closed(uv_handle_t *h) {
  kh_jupyter_t *s = h->data;
  int i;
  if (--s->handles > 0) return;
  for (i = 0; i < S_COUNT; i++)
    if (s->sock[i] != NULL) zmq_close(s->sock[i]);
  s->term.data = s;
  if (s->ctx == NULL || uv_queue_work(s->m->loop, &s->term, do_term, after_term) != 0) {
    if (s->ctx != NULL) zmq_ctx_term(s->ctx);
    after_term(&s->term, 0);
  }
}

static void stop(kh_jupyter_t *s) {
  req_t *r, *next;
  int i;
  if (s->stopping) return;
  s->stopping = 1;
  s->m->pending++; /* the STOPPED note is owed: the loop stays alive for it */
  if (s->sub_id > 0) kh_unsubscribe(s->m, s->sub_id);
  s->sub_id = 0;
  for (r = s->reqs; r; r = next) {
    next = r->next;
    r->s = NULL; /* one whose callback is owed is freed by it */
    if (!r->cb_pending) req_free(r);
  }
  s->reqs = NULL;
  while (s->parked_head != NULL) {
    parked_t *p = s->parked_head;
    s->parked_head = p->next;
    kh__jmsg_free(&p->msg);
    free(p);
  }
  s->parked_tail = NULL;
  if (s->conn_file != NULL) unlink(s->conn_file);
  s->handles = s->npolls + 1;
  for (i = 0; i < s->npolls; i++) uv_close((uv_handle_t *)&s->poll[i], on_closed);
  uv_close((uv_handle_t *)&s->idle, on_closed);
}

static void hook_kernel_closing(kh_manager_t *m, const char *kernel_id) {
  kh_jupyter_t *s;
  for (s = m->servers; s; s = s->next)
    if (!s->stopping && strcmp(s->kernel_id, kernel_id) == 0) {
      json_t *parent = json_object();
      publish_status(s, "dead", parent); /* front ends learn the kernel is gone */
      json_decref(parent);
      stop(s);
    }
}

static void hook_request_started(kh_kernel_t *k, const char *exec_id) {
  kh_jupyter_t *s;
  for (s = k->m->servers; s; s = s->next) {
    req_t *r;
    if (s->stopping || strcmp(s->kernel_id, k->id) != 0) continue;
    /* IPython's next number: the one this cell takes when it counts. */
    if ((r = req_find(s, exec_id)) != NULL) {
      r->count = k->execution_count + 1;
    } else {
      snprintf(s->started_id, sizeof(s->started_id), "%s", exec_id);
      s->started_count = k->execution_count + 1;
    }
  }
}

static void hook_manager_close(kh_manager_t *m) {
  kh_jupyter_t *s;
  for (s = m->servers; s; s = s->next) stop(s);
}

static const kh__jupyter_hooks_t hooks = {hook_kernel_closing, hook_manager_close,
                                          hook_request_started};

/* --- the API ------------------------------------------------------------------------------------ */

int kh_jupyter_serve(kh_manager_t *m, const char *kernel_id, const char *options_json,
                     kh_jupyter_cb cb, void *data, kh_jupyter_t **out) {
  kh__jupyter_opts_t o;
  kh_jupyter_t *s, *t;
  kh_kernel_t *k;
  const char *transport, *ip, *file;
  char path[4096];
  int rc, i, one = 1, linger = LINGER_MS;
  int64_t max_frame = MAX_FRAME;
  if (m == NULL || kernel_id == NULL || out == NULL) return KH_EINVAL;
  *out = NULL;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_DEAD) {
    kh__set_err(m->errmsg, "kernel \"%s\" is dead: %s", kernel_id, k->dead_reason);
    return KH_EKERNELDEAD;
  }
  for (t = m->servers; t; t = t->next)
    if (!t->stopping && strcmp(t->kernel_id, kernel_id) == 0) {
      kh__set_err(m->errmsg, "kernel \"%s\" is served on the wire already", kernel_id);
      return KH_EEXIST;
    }
  if ((rc = kh__jupyter_opts_parse(&o, options_json, m->errmsg)) != 0) return rc;
  if ((s = calloc(1, sizeof(*s))) == NULL) {
    json_decref(o.all);
    return KH_ENOMEM;
  }
  s->m = m;
  snprintf(s->kernel_id, sizeof(s->kernel_id), "%s", kernel_id);
  s->cb = cb;
  s->data = data;
  s->shutdown_mode = o.shutdown;
  rc = build_conn(s, o.all, m->errmsg);
  if (rc == 0) rc = kh__jwire_init(&s->wire, json_string_value(json_object_get(s->conn, "key")));
  transport = json_string_value(json_object_get(s->conn, "transport"));
  ip = json_string_value(json_object_get(s->conn, "ip"));
  if (rc == 0 && (s->ctx = zmq_ctx_new()) == NULL) rc = errno_code();
  for (i = 0; rc == 0 && i < S_COUNT; i++) {
    if ((s->sock[i] = zmq_socket(s->ctx, sock_types[i])) == NULL) {
      rc = errno_code();
      break;
    }
    zmq_setsockopt(s->sock[i], ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s->sock[i], ZMQ_MAXMSGSIZE, &max_frame, sizeof(max_frame));
    /* A front end that reconnects with its old identity takes its routes over (ipykernel). */
    if (sock_types[i] == ZMQ_ROUTER) zmq_setsockopt(s->sock[i], ZMQ_ROUTER_HANDOVER, &one, sizeof(one));
    /* Every subscription is seen, a repeated one too, so that each front end is welcomed. */
    if (sock_types[i] == ZMQ_XPUB) zmq_setsockopt(s->sock[i], ZMQ_XPUB_VERBOSE, &one, sizeof(one));
    rc = bind_one(s, i, transport, ip);
  }
  file = json_string_value(json_object_get(o.all, "connection_file"));
  if (rc == 0 && file == NULL && json_object_get(o.all, "connection") == NULL) {
    rc = runtime_dir(path, sizeof(path) - 80, m->errmsg);
    if (rc == 0) snprintf(path + strlen(path), 80, "/kernel-kh-%.60s.json", kernel_id);
    file = path;
  }
  if (rc == 0 && file != NULL && (rc = write_conn_file(s, file)) == 0 &&
      (s->conn_file = kh__strdup(file)) == NULL)
    rc = KH_ENOMEM;
  if (rc == 0) rc = kh_subscribe(m, kernel_id, KH_EVENT_ALL, on_event, s, &s->sub_id);
  for (i = 0; rc == 0 && i < S_COUNT; i++) {
    int fd;
    size_t n = sizeof(fd);
    if (zmq_getsockopt(s->sock[i], ZMQ_FD, &fd, &n) != 0) {
      rc = errno_code();
      break;
    }
    if ((rc = uv_poll_init(m->loop, &s->poll[i], fd)) != 0) break;
    s->poll[i].data = s;
    s->npolls++;
    rc = uv_poll_start(&s->poll[i], UV_READABLE, on_poll);
  }
  json_decref(o.all);
  if (rc != 0) {
    if (s->conn_file != NULL) unlink(s->conn_file);
    free(s->conn_file);
    s->conn_file = NULL;
    if (s->sub_id > 0) kh_unsubscribe(m, s->sub_id);
    for (i = 0; i < S_COUNT; i++)
      if (s->sock[i] != NULL) zmq_close(s->sock[i]);
    if (s->ctx != NULL) zmq_ctx_term(s->ctx);
    kh__jwire_free(&s->wire);
    json_decref(s->conn);
    if (s->npolls > 0) {
      /* Initialised poll handles must be closed before the memory goes. */
      s->sock[0] = s->sock[1] = s->sock[2] = s->sock[3] = s->sock[4] = NULL;
      s->ctx = NULL;
      s->conn = NULL;
      s->cb = NULL;
      s->handles = s->npolls;
      s->stopping = 1;
      m->pending++;
      s->next = m->servers; /* so that after_term finds and unlinks it */
      m->servers = s;
      for (i = 0; i < s->npolls; i++) uv_close((uv_handle_t *)&s->poll[i], on_closed);
    } else {
      free(s);
    }
    return rc;
  }
  uv_idle_init(m->loop, &s->idle);
  s->idle.data = s;
  s->next = m->servers;
  m->servers = s;
  m->jupyter = &hooks;
  *out = s;
  return 0;
}

int kh_jupyter_stop(kh_jupyter_t *s) {
  if (s == NULL) return KH_EINVAL;
  if (s->stopping) return KH_ECLOSED;
  stop(s);
  return 0;
}

char *kh_jupyter_info(const kh_jupyter_t *s) {
  json_t *o;
  char *text;
  if (s == NULL) return NULL;
  o = json_pack("{s:s, s:s?, s:O?, s:I, s:I, s:b}", "kernel_id", s->kernel_id, "connection_file",
                s->conn_file, "connection", s->conn, "messages", (json_int_t)s->messages,
                "dropped", (json_int_t)s->dropped, "stopping", s->stopping);
  text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return text;
}
