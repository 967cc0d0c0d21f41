/* backend-remote.c: mode "remote", kernels on a Jupyter Server / Kernel Gateway / Enterprise
 * Gateway, reached over its REST API (libcurl) and each kernel's channels WebSocket
 * (libwebsockets), with Jupyter's messages mapped onto the same events, replies and answers as
 * every other backend. Thread: loop.
 *
 * The network loop. libcurl and libwebsockets run on a private libuv loop (gw->net) that is
 * embedded in the host's: an outer uv_poll watches the private loop's backend fd, an outer timer
 * its next timeout, an outer idle runs it once after the core touched either library; each runs
 * uv_run(net, UV_RUN_NOWAIT). The outer handles are unref'd: what keeps the host's loop alive is
 * the core's own count of callbacks owed (m->pending), as for every backend, so an idle remote
 * kernel's open WebSocket no more keeps a Node process alive than a worker's pipe does.
 * libwebsockets drives libuv through its event-library plugin, whose libuv calls bind to the
 * libuv the process already has (Node's exports, or the system's for C and Lua).
 *
 * A kernel's life: POST /api/kernels (or, with remoteId, GET /api/kernels/{id}), then the
 * WebSocket /api/kernels/{id}/channels?session_id=..., then kernel_info_request: its reply
 * makes the kernel ready. Requests go out as Jupyter messages (execute_request, the editor
 * requests, comm_*, input_reply); what comes back is matched by parent msg_id. A cell's reply
 * is built when both its execute_reply (shell) and its status idle (iopub) have arrived, since
 * the two channels are not ordered against each other. Interrupt, restart and shutdown are REST
 * calls. A WebSocket that drops is reconnected with backoff under the same session id, so the
 * server replays what it buffered meanwhile (duplicates are dropped by msg_id); a request whose
 * reply cannot come any more (the kernel went idle without it) fails with KH_EREMOTE; a kernel
 * the server no longer knows, or a server that stays away past reconnectTimeout, is dead. */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <libwebsockets.h>

#include "jupyter-internal.h" /* Jupyter message headers, base64 */

#define WS_RX_MAX (512u << 20)  /* one message from the server */
#define SEEN_MAX 512            /* msg_ids remembered against replays */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define LOST_CHECK_MS 500 /* after a reconnect: how long a reply may still come late */

typedef struct gw_s gw_t;
typedef struct hreq_s hreq_t;
typedef struct rk_s rk_t;

/* --- gateway: options, the network loop ---------------------------------------------------- */

struct gw_s {
  kh_manager_t *m;
  char *base;       /* http(s)://host:port/base, no trailing slash */
  char *token;      /* NULL or "" for none */
  json_t *headers;  /* owned copy or NULL */
  int validate_cert;
  char kernel_name[256];
  long connect_ms, request_ms;
  uint64_t reconnect_ms;
  uint64_t poll_ms; /* how often a kernel's existence is asked (0: never) */
  /* for libwebsockets: parsed from base by libcurl's URL API */
  char host[256];
  int port;
  int tls;
  char path[2048]; /* base path, no trailing slash ("" for the root) */

  uv_loop_t net;
  int net_open;
  uv_poll_t outer_poll;
  uv_timer_t outer_timer;
  uv_idle_t outer_idle;
  int running; /* inside uv_run(net) */
  int dirty;   /* a library was touched during that run: run again */
  CURLM *multi;
  uv_timer_t curl_timer; /* on net */
  struct lws_context *lws;
  hreq_t *reqs;  /* REST requests in flight */
  int closing;   /* the manager is closing */
};

typedef struct {
  uv_poll_t poll; /* on net */
  curl_socket_t fd;
  gw_t *gw;
} csock_t;

typedef void (*hreq_cb)(hreq_t *h, void *data);

struct hreq_s {
  gw_t *gw;
  hreq_t *next;
  CURL *easy;
  struct curl_slist *hdrs;
  char *post;
  kh__strbuf_t body;
  long code;
  CURLcode rc;
  char errbuf[CURL_ERROR_SIZE];
  char what[320]; /* "POST <url>" for messages: the URL without the token */
  hreq_cb cb;
  void *data;
};

static void net_kick(gw_t *gw);

/* The error text for a failed request: never the token (it travels in a header only). */
static int hreq_error(const hreq_t *h, char *out, size_t n) {
  if (h->rc != CURLE_OK) {
    snprintf(out, n, "cannot reach the gateway (%s): %s", h->what,
             h->errbuf[0] ? h->errbuf : curl_easy_strerror(h->rc));
    return h->rc == CURLE_OPERATION_TIMEDOUT ? UV_ETIMEDOUT : KH_EREMOTE;
  }
  if (h->code == 401 || h->code == 403) {
    snprintf(out, n, "the gateway refused the credentials (%s: HTTP %ld)", h->what, h->code);
    return KH_EAUTH;
  }
  if (h->code < 200 || h->code >= 300) {
    /* Jupyter Server says why in {"message"} or {"reason"} */
    json_t *doc = json_loadb(h->body.buf ? h->body.buf : "", h->body.len, 0, NULL);
    const char *why = json_string_value(json_object_get(doc, "message"));
    if (why == NULL || !*why) why = json_string_value(json_object_get(doc, "reason"));
    snprintf(out, n, "the gateway answered HTTP %ld to %s%s%.300s", h->code, h->what,
             why ? ": " : "", why ? why : "");
    json_decref(doc);
    return KH_EREMOTE;
  }
  out[0] = 0;
  return 0;
}

static void hreq_free(hreq_t *h) {
  if (h->easy != NULL) curl_easy_cleanup(h->easy);
  curl_slist_free_all(h->hdrs);
  free(h->post);
  kh__sb_free(&h->body);
  free(h);
}

static size_t on_curl_write(char *p, size_t size, size_t n, void *data) {
  hreq_t *h = data;
  if (h->body.len + size * n > WS_RX_MAX) return 0; /* an answer no gateway sends */
  kh__sb_append(&h->body, p, size * n);
  return h->body.oom ? 0 : size * n;
}

/* Starts method path (relative to the base) with body post (JSON, copied) or NULL; cb runs
 * from the network loop once it is done (never inside this call). */
static hreq_t *hreq_start(gw_t *gw, const char *method, const char *path, const char *post,
                          hreq_cb cb, void *data) {
  hreq_t *h = calloc(1, sizeof(*h));
  char url[4096], hdr[4352];
  const char *name;
  json_t *v;
  if (h == NULL) return NULL;
  snprintf(url, sizeof(url), "%s%s", gw->base, path);
  snprintf(h->what, sizeof(h->what), "%s %.300s", method, url);
  h->gw = gw;
  h->cb = cb;
  h->data = data;
  if ((h->easy = curl_easy_init()) == NULL) goto fail;
  if (post != NULL && (h->post = kh__strdup(post)) == NULL) goto fail;
  if (gw->token != NULL && gw->token[0]) {
    snprintf(hdr, sizeof(hdr), "Authorization: token %s", gw->token);
    h->hdrs = curl_slist_append(h->hdrs, hdr);
  }
  json_object_foreach(gw->headers, name, v) {
    snprintf(hdr, sizeof(hdr), "%s: %s", name, json_string_value(v));
    h->hdrs = curl_slist_append(h->hdrs, hdr);
  }
  if (post != NULL) h->hdrs = curl_slist_append(h->hdrs, "Content-Type: application/json");
  h->hdrs = curl_slist_append(h->hdrs, "Accept: application/json");
  curl_easy_setopt(h->easy, CURLOPT_URL, url);
  curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, method);
  if (h->post != NULL) {
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, h->post);
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(h->post));
  } else if (strcmp(method, "POST") == 0) {
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, "");
  }
  curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->hdrs);
  curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, on_curl_write);
  curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h);
  curl_easy_setopt(h->easy, CURLOPT_PRIVATE, h);
  curl_easy_setopt(h->easy, CURLOPT_ERRORBUFFER, h->errbuf);
  curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h->easy, CURLOPT_CONNECTTIMEOUT_MS, gw->connect_ms);
  curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, gw->request_ms);
  curl_easy_setopt(h->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h->easy, CURLOPT_TCP_NODELAY, 1L);
  if (!gw->validate_cert) {
    curl_easy_setopt(h->easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h->easy, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (h->hdrs == NULL || curl_multi_add_handle(gw->multi, h->easy) != CURLM_OK) goto fail;
  h->next = gw->reqs;
  gw->reqs = h;
  net_kick(gw);
  return h;
fail:
  hreq_free(h);
  return NULL;
}

static void hreq_unlink(gw_t *gw, hreq_t *h) {
  hreq_t **p;
  for (p = &gw->reqs; *p; p = &(*p)->next)
    if (*p == h) {
      *p = h->next;
      return;
    }
}

/* Drops a request without its callback (its owner went away). */
static void hreq_cancel(hreq_t *h) {
  if (h == NULL) return;
  hreq_unlink(h->gw, h);
  curl_multi_remove_handle(h->gw->multi, h->easy);
  hreq_free(h);
}

static void curl_done(gw_t *gw) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(gw->multi, &left)) != NULL) {
    hreq_t *h = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
    h->rc = msg->data.result;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &h->code);
    curl_multi_remove_handle(gw->multi, h->easy);
    hreq_unlink(gw, h);
    if (h->cb != NULL) h->cb(h, h->data);
    hreq_free(h);
  }
}

static void on_csock(uv_poll_t *p, int status, int events) {
  csock_t *s = p->data;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(s->gw->multi, s->fd, flags, &running);
  curl_done(s->gw);
}

static void on_csock_closed(uv_handle_t *h) { free(h->data); }

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp) {
  gw_t *gw = userp;
  csock_t *s = sockp;
  int events = 0;
  (void)e;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, on_csock_closed);
      curl_multi_assign(gw->multi, fd, NULL);
    }
    return 0;
  }
  if (s == NULL) {
    if ((s = calloc(1, sizeof(*s))) == NULL) return -1;
    s->fd = fd;
    s->gw = gw;
    if (uv_poll_init_socket(&gw->net, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    curl_multi_assign(gw->multi, fd, s);
  }
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, on_csock);
  return 0;
}

static void on_curl_timer(uv_timer_t *t) {
  gw_t *gw = t->data;
  int running;
  curl_multi_socket_action(gw->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  curl_done(gw);
}

static int on_curl_timeout(CURLM *multi, long ms, void *userp) {
  gw_t *gw = userp;
  (void)multi;
  if (ms < 0)
    uv_timer_stop(&gw->curl_timer);
  else
    uv_timer_start(&gw->curl_timer, on_curl_timer, (uint64_t)ms, 0);
  return 0;
}

static void net_run(gw_t *gw);
static void on_outer_idle(uv_idle_t *h) { net_run(h->data); }
static void on_outer_timer(uv_timer_t *h) { net_run(h->data); }
static void on_outer_poll(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  net_run(h->data);
}

/* Runs the private loop once, then re-arms the outer handles by what it now waits for. */
static void net_run(gw_t *gw) {
  int t;
  int n = 0;
  if (gw->running || !gw->net_open) return;
  /* A watcher started inside the run (a reply's callback sent the next request) reaches the
   * private loop's epoll set only in its next run: so run again while that happened. */
  do {
    gw->dirty = 0;
    gw->running = 1;
    uv_run(&gw->net, UV_RUN_NOWAIT);
    gw->running = 0;
  } while (gw->dirty && gw->net_open && ++n < 16);
  if (!gw->net_open) return;
  t = uv_backend_timeout(&gw->net);
  uv_timer_stop(&gw->outer_timer);
  if (t == 0) {
    uv_idle_start(&gw->outer_idle, on_outer_idle);
  } else {
    uv_idle_stop(&gw->outer_idle);
    if (t > 0) uv_timer_start(&gw->outer_timer, on_outer_timer, (uint64_t)t, 0);
  }
}

/* The core touched libcurl or libwebsockets: their new watchers and timers reach the private
 * loop's epoll set only when it runs, so it runs on the host loop's next turn. */
static void net_kick(gw_t *gw) {
  if (!gw->net_open) return;
  if (gw->running)
    gw->dirty = 1;
  else
    uv_idle_start(&gw->outer_idle, on_outer_idle);
}

/* --- the gateway's lifetime ---------------------------------------------------------------- */

static uv_once_t curl_once = UV_ONCE_INIT;
static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  lws_set_log_level(0, NULL); /* nothing of a handshake (its token header) reaches a log */
}

static gw_t *gw_of(kh_manager_t *m) { return m->backend_state[KH__BACKEND_REMOTE]; }

/* The manager's gateway, opened on first use; NULL with errmsg when it has none. */
static gw_t *gw_get(kh_manager_t *m, int *rc) {
  gw_t *gw = gw_of(m);
  const json_t *o = m->opts.gateway;
  CURLU *u;
  char *part;
  json_t *v;
  if (gw != NULL) return gw;
  if (o == NULL) {
    kh__set_err(m->errmsg,
                "mode \"remote\" needs a gateway: give the manager option 'gateway' ({url, "
                "token}) or set KERNELHOST_GATEWAY_URL");
    *rc = KH_ENOTSUP;
    return NULL;
  }
  uv_once(&curl_once, curl_init_once);
  if ((gw = calloc(1, sizeof(*gw))) == NULL) goto oom;
  gw->m = m;
  gw->base = kh__strdup(json_string_value(json_object_get(o, "url")));
  if (gw->base == NULL) goto oom;
  while (gw->base[0] && gw->base[strlen(gw->base) - 1] == '/') gw->base[strlen(gw->base) - 1] = 0;
  if ((v = json_object_get(o, "token")) != NULL && (gw->token = kh__strdup(json_string_value(v))) == NULL)
    goto oom;
  if ((v = json_object_get(o, "headers")) != NULL) gw->headers = json_deep_copy(v);
  v = json_object_get(o, "validate_cert");
  gw->validate_cert = v == NULL || json_is_true(v);
  v = json_object_get(o, "kernel_name");
  snprintf(gw->kernel_name, sizeof(gw->kernel_name), "%s", v ? json_string_value(v) : "python3");
  v = json_object_get(o, "connect_timeout");
  gw->connect_ms = v ? (long)json_integer_value(v) : 40000;
  v = json_object_get(o, "request_timeout");
  gw->request_ms = v ? (long)json_integer_value(v) : 42000;
  v = json_object_get(o, "reconnect_timeout");
  gw->reconnect_ms = v ? (uint64_t)json_integer_value(v) : 30000;
  v = json_object_get(o, "poll_interval");
  gw->poll_ms = v ? (uint64_t)json_integer_value(v) : 5000;
  /* host, port and path for libwebsockets, by libcurl's own URL parser */
  if ((u = curl_url()) == NULL) goto oom;
  if (curl_url_set(u, CURLUPART_URL, gw->base, 0) != CURLUE_OK) {
    curl_url_cleanup(u);
    kh__set_err(m->errmsg, "manager option 'gateway.url' is not a URL libcurl can parse");
    *rc = KH_EOPTION;
    goto fail;
  }
  if (curl_url_get(u, CURLUPART_HOST, &part, 0) == CURLUE_OK) {
    /* [v6] literals come bracketed */
    size_t n = strlen(part);
    if (n > 1 && part[0] == '[' && part[n - 1] == ']')
      snprintf(gw->host, sizeof(gw->host), "%.*s", (int)(n - 2), part + 1);
    else
      snprintf(gw->host, sizeof(gw->host), "%s", part);
    curl_free(part);
  }
  gw->tls = strncmp(gw->base, "https:", 6) == 0;
  if (curl_url_get(u, CURLUPART_PORT, &part, CURLU_DEFAULT_PORT) == CURLUE_OK) {
    gw->port = atoi(part);
    curl_free(part);
  }
  if (curl_url_get(u, CURLUPART_PATH, &part, 0) == CURLUE_OK) {
    snprintf(gw->path, sizeof(gw->path), "%s", part);
    curl_free(part);
  }
  while (gw->path[0] && gw->path[strlen(gw->path) - 1] == '/') gw->path[strlen(gw->path) - 1] = 0;
  curl_url_cleanup(u);

  if (uv_loop_init(&gw->net) != 0) goto oom;
  gw->net_open = 1;
  uv_poll_init(m->loop, &gw->outer_poll, uv_backend_fd(&gw->net));
  uv_timer_init(m->loop, &gw->outer_timer);
  uv_idle_init(m->loop, &gw->outer_idle);
  gw->outer_poll.data = gw->outer_timer.data = gw->outer_idle.data = gw;
  uv_unref((uv_handle_t *)&gw->outer_poll);
  uv_unref((uv_handle_t *)&gw->outer_timer);
  uv_unref((uv_handle_t *)&gw->outer_idle);
  uv_poll_start(&gw->outer_poll, UV_READABLE, on_outer_poll);
  uv_timer_init(&gw->net, &gw->curl_timer);
  gw->curl_timer.data = gw;
  gw->multi = curl_multi_init();
  curl_multi_setopt(gw->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(gw->multi, CURLMOPT_SOCKETDATA, gw);
  curl_multi_setopt(gw->multi, CURLMOPT_TIMERFUNCTION, on_curl_timeout);
  curl_multi_setopt(gw->multi, CURLMOPT_TIMERDATA, gw);
  m->backend_state[KH__BACKEND_REMOTE] = gw;
  return gw;
oom:
  *rc = KH_ENOMEM;
fail:
  if (gw != NULL) {
    free(gw->base);
    free(gw->token);
    json_decref(gw->headers);
    free(gw);
  }
  return NULL;
}

static void on_net_handle_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* The manager's memory goes: every kernel has stopped. Closes the libraries, drains the
 * private loop (its closes complete in a run or two), then the outer handles. */
static void remote_manager_free(kh_manager_t *m) {
  gw_t *gw = gw_of(m);
  int i;
  if (gw == NULL) return;
  while (gw->reqs != NULL) hreq_cancel(gw->reqs);
  curl_multi_cleanup(gw->multi); /* closes its sockets' watchers */
  gw->multi = NULL;
  uv_close((uv_handle_t *)&gw->curl_timer, NULL);
  /* With a foreign loop the context goes in steps: the first call closes its handles, the
   * second, once they have closed (the private loop ran dry), frees the rest and NULLs gw->lws
   * (info.pcontext). Each wait is bounded, should a library never say it is done. */
  if (gw->lws != NULL) {
    lws_context_destroy(gw->lws);
    for (i = 0; i < 100 && uv_run(&gw->net, UV_RUN_NOWAIT) != 0; i++) {
    }
    if (gw->lws != NULL) lws_context_destroy(gw->lws);
    gw->lws = NULL;
  }
  for (i = 0; i < 100 && uv_run(&gw->net, UV_RUN_NOWAIT) != 0; i++) {
  }
  uv_walk(&gw->net, on_net_handle_close, NULL);
  for (i = 0; i < 100 && uv_loop_close(&gw->net) == UV_EBUSY; i++) uv_run(&gw->net, UV_RUN_NOWAIT);
  gw->net_open = 0;
  kh__manager_close_handle(m, (uv_handle_t *)&gw->outer_poll);
  kh__manager_close_handle(m, (uv_handle_t *)&gw->outer_timer);
  kh__manager_close_handle(m, (uv_handle_t *)&gw->outer_idle);
  free(gw->base);
  free(gw->token);
  json_decref(gw->headers);
  m->backend_state[KH__BACKEND_REMOTE] = NULL;
  /* the handles' memory: freed once they have closed (the manager waits for them) */
  kh__manager_keep(m, gw);
}

/* --- listing the gateway's kernels and kernelspecs ---------------------------------------- */

typedef struct {
  kh_request_cb cb;
  void *data;
  int status;
  char *json;
  size_t len;
  char errmsg[KH__ERRMSG_MAX];
} list_t;

static void run_list(kh_manager_t *m, void *arg) {
  list_t *l = arg;
  if (!m->inbox_discarding) {
    m->pending--;
    l->cb(m, NULL, l->status, l->status == 0 ? l->json : NULL, l->status == 0 ? l->len : 0,
          l->status == 0 ? NULL : l->errmsg, l->data);
    kh__manager_update_ref(m);
  }
  free(l->json);
  free(l);
}

static void list_done(hreq_t *h, void *data) {
  list_t *l = data;
  kh_manager_t *m = h->gw->m;
  l->status = hreq_error(h, l->errmsg, sizeof(l->errmsg));
  if (l->status == 0) {
    json_t *doc = json_loadb(h->body.buf ? h->body.buf : "", h->body.len, 0, NULL);
    if (doc == NULL) {
      l->status = KH_EREMOTE;
      snprintf(l->errmsg, sizeof(l->errmsg), "the gateway's answer to %s is not JSON", h->what);
    } else {
      l->json = json_dumps(doc, JSON_COMPACT);
      l->len = l->json ? strlen(l->json) : 0;
      if (l->json == NULL) l->status = KH_ENOMEM;
      json_decref(doc);
    }
  }
  if (kh__defer(m, run_list, l) != 0) {
    m->pending--;
    free(l->json);
    free(l);
  }
}

int kh_gateway_list(kh_manager_t *m, const char *what, kh_request_cb cb, void *data) {
  gw_t *gw;
  list_t *l;
  int rc = 0;
  const char *path;
  if (m == NULL) return KH_EINVAL;
  m->errmsg[0] = 0;
  if (what == NULL || cb == NULL) {
    kh__set_err(m->errmsg, "kh_gateway_list needs what and a callback");
    return KH_EINVAL;
  }
  if (strcmp(what, "kernels") == 0)
    path = "/api/kernels";
  else if (strcmp(what, "kernelspecs") == 0)
    path = "/api/kernelspecs";
  else {
    kh__set_err(m->errmsg, "what must be \"kernels\" or \"kernelspecs\", got \"%.40s\"", what);
    return KH_EINVAL;
  }
  if (m->closing) {
    kh__set_err(m->errmsg, "the manager is closed");
    return KH_ECLOSED;
  }
  if ((gw = gw_get(m, &rc)) == NULL) return rc;
  if ((l = calloc(1, sizeof(*l))) == NULL) return KH_ENOMEM;
  l->cb = cb;
  l->data = data;
  if (hreq_start(gw, "GET", path, NULL, list_done, l) == NULL) {
    free(l);
    return KH_ENOMEM;
  }
  m->pending++;
  kh__manager_update_ref(m);
  return 0;
}

/* A closing manager answers what it still owes now. */
static void remote_manager_close(kh_manager_t *m) {
  gw_t *gw = gw_of(m);
  hreq_t *h, *next;
  if (gw == NULL) return;
  gw->closing = 1;
  for (h = gw->reqs; h; h = next) {
    next = h->next;
    if (h->cb == list_done) {
      list_t *l = h->data;
      hreq_cancel(h);
      l->status = KH_ECANCELED;
      snprintf(l->errmsg, sizeof(l->errmsg), "canceled: the manager is closing");
      if (kh__defer(m, run_list, l) != 0) {
        m->pending--;
        free(l);
      }
    }
  }
}

/* --- a remote kernel ------------------------------------------------------------------------ */

typedef enum { P_EXEC = 1, P_COMM, P_INTERACT, P_HELLO } pkind_t;

/* A Jupyter request of ours in flight, by its msg_id. */
typedef struct pend_s {
  struct pend_s *next;
  char msg_id[40];
  pkind_t kind;
  char id[KH__EXEC_ID_MAX > 80 ? KH__EXEC_ID_MAX : 80]; /* exec id, or the editor request's */
  json_t *reply;  /* the shell reply's content, once it came */
  json_t *result; /* the last execute_result's content */
  int idle;       /* iopub's status idle for it came */
  int written;    /* handed to the socket */
  int at_risk;    /* written before the channel dropped: its reply may be lost */
} pend_t;

typedef struct outmsg_s {
  struct outmsg_s *next;
  size_t len;
  int binary; /* Jupyter Server's binary framing: a message with buffers */
  char msg_id[40];
  unsigned char buf[]; /* LWS_PRE bytes, then len bytes of the message */
} outmsg_t;

typedef enum { PH_START, PH_READY, PH_RESTART, PH_STOP } phase_t;

struct rk_s {
  kh_kernel_t *k;
  gw_t *gw;
  char remote_id[256];
  char session[40];
  phase_t phase;
  int attached;   /* remoteId: a kernel someone else started */
  int shutdown;   /* stop shuts the remote kernel down */
  struct lws *wsi;
  int ws_open;    /* established */
  int connecting; /* inside lws_client_connect_via_info */
  int reconnecting;
  int hello_pending; /* the kernel_info that (re)opens the channel is in flight */
  int nudges;        /* kernel_info asked again while iopub was silent */
  int attempt;
  uint64_t drop_at;
  char drop_why[700];
  kh__strbuf_t rx;
  outmsg_t *out_head, *out_tail;
  pend_t *pend;
  char seen[SEEN_MAX][40];
  int seen_pos;
  hreq_t *hreq; /* this kernel's REST request in flight */
  uv_timer_t timer; /* reconnect backoff, the lost-reply check (on the host loop, unref'd) */
  uv_timer_t probe; /* every pollInterval: does the server still have the kernel? */
  char passed_var[64]; /* the variable the passed options went in ("": none were) */
  int handles;      /* open timers: rk is freed when the last has closed */
  int stopped;
};

static void ws_connect(rk_t *rk);
static void rk_maybe_stopped(rk_t *rk);
static void hello(rk_t *rk);
static void lost_check_arm(rk_t *rk);
static void on_probe_timer(uv_timer_t *t);
static void report_dead(rk_t *rk, const char *why);
static void on_started(hreq_t *h, void *data);

static void pend_free(pend_t *p) {
  json_decref(p->reply);
  json_decref(p->result);
  free(p);
}

static pend_t *pend_find(rk_t *rk, const char *msg_id) {
  pend_t *p;
  for (p = rk->pend; p; p = p->next)
    if (strcmp(p->msg_id, msg_id) == 0) return p;
  return NULL;
}

static void pend_remove(rk_t *rk, pend_t *x) {
  pend_t **p;
  for (p = &rk->pend; *p; p = &(*p)->next)
    if (*p == x) {
      *p = x->next;
      pend_free(x);
      return;
    }
}

static void pend_clear(rk_t *rk) {
  while (rk->pend) {
    pend_t *p = rk->pend;
    rk->pend = p->next;
    pend_free(p);
  }
}

/* --- messages ---------------------------------------------------------------------------- */

/* Queues a message: text alone, or with buffers in Jupyter Server's binary framing (a count n,
 * n big-endian uint32 offsets, the JSON, then each buffer). */
static void out_push(rk_t *rk, const char *text, size_t len, const kh__bufs_t *bufs, int front) {
  size_t n = bufs ? bufs->n : 0, total = len, i, off;
  outmsg_t *o;
  unsigned char *b;
  for (i = 0; i < n; i++) total += bufs->v[i].blob->len;
  if (n > 0) total += 4 * (n + 2);
  o = malloc(sizeof(*o) + LWS_PRE + total);
  if (o == NULL) return; /* the request then times out: nothing else to do without memory */
  o->next = NULL;
  o->len = total;
  o->msg_id[0] = 0;
  o->binary = n > 0;
  b = o->buf + LWS_PRE;
  if (n > 0) {
    /* [count = n + 1][offset of the JSON][offset of buffer 0] ... [offset of buffer n-1] */
    size_t w = 0;
    uint32_t word;
    off = 4 * (n + 2);
    for (w = 0; w < n + 2; w++) {
      if (w == 0) {
        word = (uint32_t)(n + 1);
      } else {
        word = (uint32_t)off;
        off += w == 1 ? len : bufs->v[w - 2].blob->len;
      }
      b[4 * w] = (unsigned char)(word >> 24);
      b[4 * w + 1] = (unsigned char)(word >> 16);
      b[4 * w + 2] = (unsigned char)(word >> 8);
      b[4 * w + 3] = (unsigned char)word;
    }
    b += 4 * (n + 2);
  }
  memcpy(b, text, len);
  b += len;
  for (i = 0; i < n; i++) {
    memcpy(b, bufs->v[i].blob->data, bufs->v[i].blob->len);
    b += bufs->v[i].blob->len;
  }
  if (front) { /* a channel's kernel_info goes ahead of what waited for the channel */
    o->next = rk->out_head;
    rk->out_head = o;
    if (rk->out_tail == NULL) rk->out_tail = o;
  } else if (rk->out_tail) {
    rk->out_tail->next = o;
    rk->out_tail = o;
  } else {
    rk->out_head = rk->out_tail = o;
  }
  if (rk->wsi != NULL && rk->ws_open) {
    lws_callback_on_writable(rk->wsi);
    net_kick(rk->gw);
  }
}

/* Sends msg_type on channel with content (taken); msg_id_out gets the new msg_id. */
static int send_msg_bufs(rk_t *rk, const char *channel, const char *msg_type, json_t *content,
                         const kh__bufs_t *bufs, int front, char *msg_id_out) {
  char id[40];
  json_t *msg;
  char *text;
  kh__uuid(id);
  msg = json_pack("{s:o, s:{}, s:{}, s:o, s:s, s:[]}", "header",
                  kh__jwire_header(NULL, msg_type, rk->session, id, "kernelhost"),
                  "parent_header", "metadata", "content", content ? content : json_object(),
                  "channel", channel, "buffers");
  if (msg == NULL) return KH_ENOMEM;
  text = json_dumps(msg, JSON_COMPACT);
  json_decref(msg);
  if (text == NULL) return KH_ENOMEM;
  out_push(rk, text, strlen(text), bufs, front);
  {
    outmsg_t *o = front ? rk->out_head : rk->out_tail;
    if (o != NULL) snprintf(o->msg_id, sizeof(o->msg_id), "%s", id);
  }
  free(text);
  if (msg_id_out) snprintf(msg_id_out, 40, "%s", id);
  return 0;
}

static int send_msg(rk_t *rk, const char *channel, const char *msg_type, json_t *content,
                    char *msg_id_out) {
  return send_msg_bufs(rk, channel, msg_type, content, NULL, 0, msg_id_out);
}

static pend_t *pend_new(rk_t *rk, pkind_t kind, const char *id) {
  pend_t *p = calloc(1, sizeof(*p));
  if (p == NULL) return NULL;
  p->kind = kind;
  snprintf(p->id, sizeof(p->id), "%s", id ? id : "");
  p->next = rk->pend;
  rk->pend = p;
  return p;
}

static int seen_before(rk_t *rk, const char *msg_id) {
  int i;
  if (msg_id == NULL || !*msg_id) return 0;
  for (i = 0; i < SEEN_MAX; i++)
    if (rk->seen[i][0] && strcmp(rk->seen[i], msg_id) == 0) return 1;
  snprintf(rk->seen[rk->seen_pos], sizeof(rk->seen[0]), "%s", msg_id);
  rk->seen_pos = (rk->seen_pos + 1) % SEEN_MAX;
  return 0;
}

/* Binary MIME values, as the runtime decides them (_kh_display.is_binary_mime): base64 text in
 * Jupyter's messages, bytes beside the JSON for a kernel with binary "bytes". */
static int is_binary_mime(const char *mime) {
  static const char *const mimes[] = {"image/png",  "image/jpeg", "image/gif",      "image/webp",
                                      "image/bmp",  "image/tiff", "application/pdf", NULL};
  int i;
  for (i = 0; mimes[i]; i++)
    if (strcmp(mime, mimes[i]) == 0) return 1;
  return strncmp(mime, "audio/", 6) == 0 || strncmp(mime, "video/", 6) == 0;
}

/* Moves the binary values of bundle (a {mime: value} object) into bufs at prefix/<mime>. */
static void split_binary(json_t *bundle, const char *prefix, kh__bufs_t *bufs) {
  const char *mime;
  json_t *v;
  void *tmp;
  json_object_foreach_safe(bundle, tmp, mime, v) {
    char path[512], esc[300];
    size_t i, j, n;
    unsigned char *raw;
    size_t len = 0, c = 0;
    char *clean;
    const char *text;
    if (!json_is_string(v) || !is_binary_mime(mime)) continue;
    n = json_string_length(v);
    text = json_string_value(v);
    if ((clean = malloc(n + 1)) == NULL) continue;
    /* the base64 may be wrapped in lines (IPython's Image keeps them) */
    for (i = 0; i < n; i++)
      if (text[i] != '\n' && text[i] != '\r' && text[i] != ' ') clean[c++] = text[i];
    raw = kh__jwire_b64_bytes(clean, c, &len);
    free(clean);
    if (raw == NULL) continue; /* not base64 after all: left as the text it is */
    for (i = 0, j = 0; mime[i] && j + 3 < sizeof(esc); i++) {
      if (mime[i] == '~') {
        esc[j++] = '~';
        esc[j++] = '0';
      } else if (mime[i] == '/') {
        esc[j++] = '~';
        esc[j++] = '1';
      } else {
        esc[j++] = mime[i];
      }
    }
    esc[j] = 0;
    snprintf(path, sizeof(path), "%s/%s", prefix, esc);
    if (kh__bufs_add_copy(bufs, path, raw, len) == 0) json_object_set_new(bundle, mime, json_null());
    free(raw);
  }
}

static const char *event_name(const char *msg_type) {
  return strcmp(msg_type, "error") == 0 ? "execute_error" : msg_type;
}

/* --- replies ------------------------------------------------------------------------------- */

/* A cell's reply, once both its execute_reply and its idle have come. */
static void finish_exec(rk_t *rk, pend_t *p) {
  kh_kernel_t *k = rk->k;
  json_t *rep = p->reply, *out;
  const char *status = json_string_value(json_object_get(rep, "status"));
  json_t *count = json_object_get(rep, "execution_count");
  kh__bufs_t bufs = {0};
  char *text;
  char exec_id[sizeof(p->id)];
  if (status == NULL || (strcmp(status, "ok") != 0 && strcmp(status, "aborted") != 0))
    status = "error";
  if (strcmp(status, "aborted") == 0) status = "error";
  out = json_pack("{s:s, s:O}", "status", status, "execution_count",
                  json_is_integer(count) ? count : json_integer(k->execution_count));
  if (strcmp(status, "error") == 0) {
    json_t *tb = json_object_get(rep, "traceback");
    json_object_set_new(out, "error",
                        json_pack("{s:s, s:s, s:O}", "ename",
                                  json_string_value(json_object_get(rep, "ename"))
                                      ? json_string_value(json_object_get(rep, "ename"))
                                      : "Error",
                                  "evalue",
                                  json_string_value(json_object_get(rep, "evalue"))
                                      ? json_string_value(json_object_get(rep, "evalue"))
                                      : "",
                                  "traceback", json_is_array(tb) ? tb : json_array()));
  } else if (p->result != NULL) {
    json_t *data = json_deep_copy(json_object_get(p->result, "data"));
    json_t *md = json_object_get(p->result, "metadata");
    if (data == NULL) data = json_object();
    if (!k->opts.binary_base64) split_binary(data, "/result/data", &bufs);
    json_object_set_new(out, "result",
                        json_pack("{s:o, s:O}", "data", data, "metadata", md ? md : json_object()));
  }
  text = json_dumps(out, JSON_COMPACT);
  json_decref(out);
  snprintf(exec_id, sizeof(exec_id), "%s", p->id);
  pend_remove(rk, p);
  if (text != NULL) {
    kh__kernel_on_reply(k, exec_id, text, strlen(text), &bufs);
    free(text);
  } else {
    kh__bufs_free(&bufs);
    kh__kernel_on_reply(k, exec_id, "{}", 2, NULL);
  }
}

static void maybe_finish(rk_t *rk, pend_t *p) {
  if (p->kind == P_EXEC && p->reply != NULL && p->idle) {
    finish_exec(rk, p);
  } else if (p->kind == P_COMM && p->idle) {
    char id[sizeof(p->id)];
    snprintf(id, sizeof(id), "%s", p->id);
    pend_remove(rk, p);
    kh__kernel_on_reply(rk->k, id, "{\"status\":\"ok\"}", 15, NULL);
  }
}

/* The channel is open again (or for the first time): its kernel_info_reply came. */
static void on_hello(rk_t *rk) {
  kh_kernel_t *k = rk->k;
  pend_t *p, *next;
  rk->hello_pending = 0;
  rk->attempt = 0;
  if (rk->reconnecting) {
    rk->reconnecting = 0;
    /* What the server replayed has come before this reply. A cell whose reply came without
     * its idle is done; one with neither gets a moment, then the kernel's state decides. */
    for (p = rk->pend; p; p = next) {
      next = p->next;
      if (p->kind == P_EXEC && p->reply != NULL) {
        p->idle = 1;
        maybe_finish(rk, p);
      }
    }
    for (p = rk->pend; p; p = p->next)
      if ((p->kind == P_EXEC || p->kind == P_COMM) && p->at_risk) {
        lost_check_arm(rk);
        break;
      }
    return;
  }
  if (rk->gw->poll_ms > 0 && !uv_is_active((uv_handle_t *)&rk->probe))
    uv_timer_start(&rk->probe, on_probe_timer, rk->gw->poll_ms, rk->gw->poll_ms);
  if (rk->phase == PH_START) {
    rk->phase = PH_READY;
    kh__kernel_on_ready(k, 0, NULL);
  } else if (rk->phase == PH_RESTART) {
    rk->phase = PH_READY;
    kh__kernel_on_reset(k, 0, NULL);
  }
}

/* A channel is open when a kernel_info_request of ours has its reply on shell and its status
 * on iopub: the server's iopub subscription to a kernel that just (re)started joins late, and
 * what the kernel publishes before that is lost (a cell's outputs and idle, so its reply would
 * never complete). Until iopub answers, kernel_info is asked again every NUDGE_MS, as Jupyter
 * Server's own nudge does when a client connects; after NUDGE_MAX tries the channel is taken as
 * it is. */
#define NUDGE_MS 200
#define NUDGE_MAX 50

static void hello_done(rk_t *rk) {
  pend_t *p, *next;
  for (p = rk->pend; p; p = next) {
    next = p->next;
    if (p->kind == P_HELLO) pend_remove(rk, p);
  }
  uv_timer_stop(&rk->timer);
  rk->nudges = 0;
  on_hello(rk);
}

static void on_nudge(uv_timer_t *t) {
  rk_t *rk = t->data;
  if (rk->phase == PH_STOP || !rk->hello_pending) return;
  if (++rk->nudges >= NUDGE_MAX) {
    hello_done(rk);
    return;
  }
  hello(rk);
  uv_timer_start(&rk->timer, on_nudge, NUDGE_MS, 0);
}

static void hello_check(rk_t *rk, pend_t *p) {
  if (p->reply != NULL && p->idle) {
    hello_done(rk);
  } else if (p->reply != NULL && !uv_is_active((uv_handle_t *)&rk->timer)) {
    uv_timer_start(&rk->timer, on_nudge, NUDGE_MS, 0);
  }
}

/* A message's binary buffers, as they came in a binary frame. */
typedef struct {
  const unsigned char *p[64];
  size_t len[64];
  size_t n;
} inbufs_t;

/* One message from the server (parsed), with its buffers (NULL: none). */
static void on_message(rk_t *rk, json_t *msg, const inbufs_t *ib) {
  kh_kernel_t *k = rk->k;
  json_t *header = json_object_get(msg, "header"), *parent = json_object_get(msg, "parent_header");
  json_t *content = json_object_get(msg, "content");
  const char *msg_type = json_string_value(json_object_get(header, "msg_type"));
  const char *msg_id = json_string_value(json_object_get(header, "msg_id"));
  const char *channel = json_string_value(json_object_get(msg, "channel"));
  const char *parent_id = json_string_value(json_object_get(parent, "msg_id"));
  pend_t *p;
  if (msg_type == NULL || channel == NULL || !json_is_object(content)) return;
  if (seen_before(rk, msg_id)) return; /* replayed after a reconnect, and seen already */
  if (strcmp(channel, "iopub") == 0 && strcmp(msg_type, "status") == 0) {
    const char *st = json_string_value(json_object_get(content, "execution_state"));
    if (st == NULL) return;
    /* The server's own news of the kernel (no parent): it died and was restarted, or died. */
    if (parent_id == NULL || !*parent_id) {
      if (strcmp(st, "restarting") == 0 && rk->phase == PH_READY) {
        kh__kernel_on_restarting(
            k, "{\"message\":\"the kernel died on the gateway, which is restarting it\"}");
        pend_clear(rk);
        rk->phase = PH_RESTART;
        rk->hello_pending = 1; /* the next kernel_info_reply makes it ready again */
        hello(rk);
      } else if (strcmp(st, "dead") == 0) {
        report_dead(rk, "the kernel died on the gateway and was not restarted");
      }
      return;
    }
    if ((p = pend_find(rk, parent_id)) != NULL && p->kind == P_HELLO) {
      p->idle = 1; /* iopub flows: busy or idle, either says so */
      hello_check(rk, p);
    } else if (p != NULL && strcmp(st, "idle") == 0) {
      p->idle = 1;
      maybe_finish(rk, p);
    }
    return;
  }
  if (parent_id == NULL || (p = pend_find(rk, parent_id)) == NULL) return; /* not ours */
  if (strcmp(channel, "shell") == 0) {
    if (p->kind == P_HELLO) {
      json_decref(p->reply);
      p->reply = json_incref(content);
      hello_check(rk, p);
    } else if (p->kind == P_INTERACT) {
      char *text = json_dumps(content, JSON_COMPACT);
      char id[sizeof(p->id)];
      snprintf(id, sizeof(id), "%s", p->id);
      pend_remove(rk, p);
      if (text != NULL) kh__kernel_on_answer(k, id, 0, text, strlen(text));
      free(text);
    } else if (p->kind == P_EXEC && strcmp(msg_type, "execute_reply") == 0) {
      p->reply = json_incref(content);
      maybe_finish(rk, p);
    }
    return;
  }
  if (p->kind != P_EXEC && p->kind != P_COMM) return;
  if (strcmp(channel, "iopub") == 0 || strcmp(channel, "stdin") == 0) {
    int type;
    char *text;
    kh__bufs_t bufs = {0};
    json_t *c;
    if (strcmp(msg_type, "execute_input") == 0) return;
    type = kh_event_type_from_name(event_name(msg_type));
    if (type < 0 || type == KH_EVENT_STATUS) return;
    if (strcmp(channel, "stdin") == 0 && type != KH_EVENT_INPUT_REQUEST) return;
    if (type == KH_EVENT_EXECUTE_RESULT) {
      json_decref(p->result);
      p->result = json_incref(content);
    }
    c = json_deep_copy(content);
    if (c == NULL) return;
    if (!k->opts.binary_base64 && json_is_object(json_object_get(c, "data")) &&
        (type == KH_EVENT_DISPLAY_DATA || type == KH_EVENT_UPDATE_DISPLAY_DATA ||
         type == KH_EVENT_EXECUTE_RESULT))
      split_binary(json_object_get(c, "data"), "/data", &bufs);
    if (type == KH_EVENT_INPUT_REQUEST && json_object_get(c, "password") == NULL)
      json_object_set_new(c, "password", json_false());
    if (ib != NULL && ib->n > 0) { /* comm buffers: as the local runtime hands them out */
      json_t *arr = json_array();
      size_t i;
      char path[32];
      for (i = 0; i < ib->n && arr != NULL; i++) {
        if (k->opts.binary_base64) {
          json_array_append_new(arr, kh__jwire_b64_string(ib->p[i], ib->len[i]));
        } else {
          snprintf(path, sizeof(path), "/buffers/%zu", i);
          json_array_append_new(arr, json_null());
          kh__bufs_add_copy(&bufs, path, ib->p[i], ib->len[i]);
        }
      }
      if (arr != NULL) json_object_set_new(c, "buffers", arr);
    }
    text = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    if (text != NULL) kh__kernel_on_event(k, type, p->id, text, strlen(text), &bufs);
    kh__bufs_free(&bufs);
    free(text);
  }
}

/* Jupyter Server's binary frames: a count n, n big-endian uint32 offsets (the JSON message's,
 * then each buffer's), the message, the buffers. The buffers (comm buffers) are dropped here:
 * the message itself is handled. */
static uint32_t be32(const unsigned char *b) {
  return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static void on_frame(rk_t *rk, const char *data, size_t len, int binary) {
  json_t *msg;
  inbufs_t ib;
  ib.n = 0;
  if (binary) {
    const unsigned char *b = (const unsigned char *)data;
    uint32_t n, i, start, end;
    if (len < 8) return;
    n = be32(b); /* the JSON and n - 1 buffers; anything malformed is dropped */
    if (n < 1 || n > 65 || len < 4 + 4 * (size_t)n) return;
    for (i = 0; i < n; i++) {
      start = be32(b + 4 + 4 * i);
      end = i + 1 < n ? be32(b + 8 + 4 * i) : (uint32_t)len;
      if (start > end || end > len || start < 4 + 4 * n) return;
      if (i > 0) {
        ib.p[ib.n] = b + start;
        ib.len[ib.n++] = end - start;
      }
    }
    start = be32(b + 4);
    end = n > 1 ? be32(b + 8) : (uint32_t)len;
    msg = json_loadb(data + start, end - start, 0, NULL);
  } else {
    msg = json_loadb(data, len, 0, NULL);
  }
  if (json_is_object(msg)) on_message(rk, msg, &ib);
  json_decref(msg);
}

/* --- the WebSocket ------------------------------------------------------------------------- */

static void schedule_retry(rk_t *rk);

/* The channel went away without our asking. */
static void ws_lost(rk_t *rk, const char *why) {
  rk->connecting = 0;
  rk->ws_open = 0;
  rk->wsi = NULL;
  kh__sb_free(&rk->rx);
  if (rk->phase == PH_STOP) {
    rk_maybe_stopped(rk);
    return;
  }
  {
    pend_t *p;
    for (p = rk->pend; p; p = p->next)
      if (p->written) p->at_risk = 1;
  }
  if (!rk->reconnecting) {
    rk->reconnecting = 1;
    rk->drop_at = uv_now(rk->gw->m->loop);
    rk->attempt = 0;
  }
  snprintf(rk->drop_why, sizeof(rk->drop_why), "%s", why && *why ? why : "connection closed");
  schedule_retry(rk);
}

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len) {
  rk_t *rk = lws_get_opaque_user_data(wsi);
  (void)user;
  switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
      unsigned char **p = (unsigned char **)in, *end = (*p) + len;
      char v[4200];
      const char *name;
      json_t *hv;
      if (rk == NULL) return -1;
      if (rk->gw->token != NULL && rk->gw->token[0]) {
        snprintf(v, sizeof(v), "token %s", rk->gw->token);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"authorization:",
                                        (const unsigned char *)v, (int)strlen(v), p, end))
          return -1;
      }
      json_object_foreach(rk->gw->headers, name, hv) {
        char hn[300];
        snprintf(hn, sizeof(hn), "%s:", name);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)hn,
                                        (const unsigned char *)json_string_value(hv),
                                        (int)strlen(json_string_value(hv)), p, end))
          return -1;
      }
      return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
      int one = 1;
      if (rk == NULL) return -1;
      /* small messages both ways: Nagle against the peer's delayed ACK costs 40 ms a cell */
      setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      rk->ws_open = 1;
      if (rk->out_head) {
        lws_callback_on_writable(wsi);
        net_kick(rk->gw);
      }
      return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE: {
      int one = 1;
      if (rk == NULL) return -1;
      /* Jupyter Server writes a cell's messages one by one with Nagle on (tornado's default):
       * each waits for our ACK of the one before, which Linux delays by 40 ms unless told to
       * ACK at once; the flag does not stick, so it is set again after every read. */
      setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
      if (rk->rx.len + len > WS_RX_MAX) return -1;
      kh__sb_append(&rk->rx, in, len);
      if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
        int binary = lws_frame_is_binary(wsi);
        kh__strbuf_t rx = rk->rx;
        memset(&rk->rx, 0, sizeof(rk->rx));
        if (!rx.oom) on_frame(rk, rx.buf ? rx.buf : "", rx.len, binary);
        kh__sb_free(&rx);
      }
      return 0;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
      outmsg_t *o;
      if (rk == NULL) return -1;
      if ((o = rk->out_head) == NULL) return 0;
      if (lws_write(wsi, o->buf + LWS_PRE, o->len, o->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) <
          (int)o->len)
        return -1;
      rk->out_head = o->next;
      if (rk->out_head == NULL) rk->out_tail = NULL;
      {
        pend_t *p = o->msg_id[0] ? pend_find(rk, o->msg_id) : NULL;
        if (p != NULL) p->written = 1;
      }
      free(o);
      if (rk->out_head) {
        lws_callback_on_writable(wsi);
        net_kick(rk->gw);
      }
      return 0;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
      if (rk != NULL) {
        char why[200];
        snprintf(why, sizeof(why), "%.*s", in ? (int)(len ? len : strlen(in)) : 0,
                 in ? (const char *)in : "");
        lws_set_opaque_user_data(wsi, NULL);
        ws_lost(rk, why[0] ? why : "the WebSocket could not connect");
      }
      return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
      if (rk != NULL) {
        lws_set_opaque_user_data(wsi, NULL);
        ws_lost(rk, "the WebSocket closed");
      }
      return 0;
    default:
      return 0;
  }
}

static const uint32_t ws_backoff[] = {1000};
static const lws_retry_bo_t ws_policy = {
    .retry_ms_table = ws_backoff,
    .retry_ms_table_count = 1,
    .conceal_count = 0,
    .secs_since_valid_ping = 15,
    .secs_since_valid_hangup = 30,
    .jitter_percent = 0,
};

static const struct lws_protocols protocols[] = {
    {"kh-jupyter-channels", on_lws, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

/* libwebsockets loads its libuv plugin with dlopen() and unloads it with the last context. The
 * plugin names the system's libuv.so.1, which goes with it; in Node, whose own libuv is the one
 * every uv_* symbol binds to, that unload runs libuv.so.1's destructor, bound to Node's own
 * uv_library_shutdown(): Node's signal lock and threadpool would be gone (the next
 * child_process spawn aborts). So the plugin is pinned, RTLD_NODELETE, before the first context:
 * it and libuv.so.1 stay until exit, where Node's libuv has shut itself down already. */
static void pin_uv_plugin(void) {
  (void)dlopen("libwebsockets-evlib_uv.so", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
}
static uv_once_t pin_once = UV_ONCE_INIT;

static int gw_lws_open(gw_t *gw) {
  struct lws_context_creation_info info;
  void *loops[1];
  if (gw->lws != NULL) return 0;
  uv_once(&pin_once, pin_uv_plugin);
  memset(&info, 0, sizeof(info));
  loops[0] = &gw->net;
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols;
  info.gid = (gid_t)-1;
  info.uid = (uid_t)-1;
  info.options = LWS_SERVER_OPTION_LIBUV;
  /* the bound on a channel's connect and handshake, as connectTimeout bounds libcurl's */
  info.timeout_secs = gw->connect_ms >= 2000 ? (unsigned)(gw->connect_ms / 1000) : 1;
  if (gw->tls) info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
  info.foreign_loops = loops;
  info.pcontext = &gw->lws; /* NULLed once its destroy has completed on the loop */
  gw->lws = lws_create_context(&info);
  return gw->lws ? 0 : KH_EREMOTE;
}

static void ws_connect(rk_t *rk) {
  gw_t *gw = rk->gw;
  struct lws_client_connect_info ci;
  char path[3000];
  struct lws *w;
  pend_t *p, *next;
  if (gw_lws_open(gw) != 0) {
    ws_lost(rk, "libwebsockets could not start (its libuv event library is missing?)");
    return;
  }
  snprintf(path, sizeof(path), "%s/api/kernels/%s/channels?session_id=%s", gw->path,
           rk->remote_id, rk->session);
  memset(&ci, 0, sizeof(ci));
  ci.context = gw->lws;
  ci.address = gw->host;
  ci.port = gw->port;
  ci.path = path;
  ci.host = gw->host;
  ci.ssl_connection = gw->tls ? LCCSCF_USE_SSL : 0;
  if (gw->tls && !gw->validate_cert)
    ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                         LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
  ci.local_protocol_name = protocols[0].name;
  ci.retry_and_idle_policy = &ws_policy; /* pings: a silent, half-open connection is a drop */
  ci.opaque_user_data = rk;
  rk->ws_open = 0;
  rk->hello_pending = 1;
  for (p = rk->pend; p; p = next) { /* an earlier attempt's kernel_info went with it */
    next = p->next;
    if (p->kind == P_HELLO) pend_remove(rk, p);
  }
  hello(rk);
  rk->wsi = NULL;
  rk->connecting = 1;
  w = lws_client_connect_via_info(&ci);
  if (!rk->connecting) return; /* failed at once: ws_lost ran inside the call */
  rk->connecting = 0;
  if (w == NULL) {
    ws_lost(rk, "the WebSocket could not be started");
    return;
  }
  rk->wsi = w;
  net_kick(gw);
}

/* kernel_info_request, the first message on a (re)opened channel: its reply says the kernel
 * answers. It is queued ahead of everything else that waits for the channel. */
static void hello(rk_t *rk) {
  pend_t *p = pend_new(rk, P_HELLO, NULL);
  if (p == NULL) return;
  send_msg_bufs(rk, "shell", "kernel_info_request", json_object(), NULL, 1, p->msg_id);
}

static void ws_close(rk_t *rk) {
  if (rk->wsi != NULL) {
    lws_set_opaque_user_data(rk->wsi, NULL);
    lws_set_timeout(rk->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
    rk->wsi = NULL;
    net_kick(rk->gw);
  }
  rk->ws_open = 0;
}

/* --- reconnecting, and the kernel's end ---------------------------------------------------- */

static void rk_free_timer_closed(uv_handle_t *h) {
  rk_t *rk = h->data;
  if (--rk->handles == 0) free(rk);
}

static void rk_close_timers(rk_t *rk) {
  rk->timer.data = rk->probe.data = rk;
  uv_close((uv_handle_t *)&rk->timer, rk_free_timer_closed);
  uv_close((uv_handle_t *)&rk->probe, rk_free_timer_closed);
}

static void report_dead(rk_t *rk, const char *why) {
  json_t *r;
  char *text;
  if (rk->phase == PH_STOP) return;
  pend_clear(rk);
  ws_close(rk);
  rk->reconnecting = 0;
  uv_timer_stop(&rk->timer);
  uv_timer_stop(&rk->probe);
  if (rk->phase == PH_START || rk->phase == PH_RESTART) {
    int restart = rk->phase == PH_RESTART;
    rk->phase = PH_READY;
    if (restart)
      kh__kernel_on_reset(rk->k, KH_EREMOTE, why);
    else
      kh__kernel_on_ready(rk->k, KH_EREMOTE, why);
    return;
  }
  r = json_pack("{s:s, s:s}", "message", why, "remote_id", rk->remote_id);
  text = r ? json_dumps(r, JSON_COMPACT) : NULL;
  json_decref(r);
  kh__kernel_on_dead(rk->k, text ? text : "{\"message\":\"the remote kernel is gone\"}");
  free(text);
}

/* A kernel's REST request is done: its slot is free. NULL when the kernel is stopping (the
 * answer no longer matters, and the stop may complete now). */
static rk_t *rk_answered(void *data) {
  rk_t *rk = data;
  rk->hreq = NULL;
  if (rk->phase == PH_STOP) {
    rk_maybe_stopped(rk);
    return NULL;
  }
  return rk;
}

/* GET /api/kernels/{id} answered: 1 when the answer says the kernel is gone for us (no such
 * kernel, or the credentials no longer work), reported dead here; else *rc is its status. */
static int answer_says_gone(rk_t *rk, hreq_t *h, char *err, size_t n, int *rc) {
  *rc = hreq_error(h, err, n);
  if (h->code == 404) {
    report_dead(rk, "the kernel is gone from the gateway (shut down or culled there, or the "
                    "server restarted without it)");
    return 1;
  }
  if (*rc == KH_EAUTH) {
    report_dead(rk, err);
    return 1;
  }
  return 0;
}

static void on_kernel_probe(hreq_t *h, void *data) {
  rk_t *rk = rk_answered(data);
  char err[700];
  int rc;
  if (rk == NULL) return;
  if (answer_says_gone(rk, h, err, sizeof(err), &rc)) return;
  if (rc == 0) {
    ws_connect(rk);
    return;
  }
  snprintf(rk->drop_why, sizeof(rk->drop_why), "%s", err);
  schedule_retry(rk);
}

static void on_retry_timer(uv_timer_t *t) {
  rk_t *rk = t->data;
  char path[600];
  if (rk->phase == PH_STOP || rk->hreq != NULL) return;
  /* The server says whether the kernel still exists before the WebSocket is tried again. */
  snprintf(path, sizeof(path), "/api/kernels/%s", rk->remote_id);
  rk->hreq = hreq_start(rk->gw, "GET", path, NULL, on_kernel_probe, rk);
  if (rk->hreq == NULL) schedule_retry(rk);
}

static void schedule_retry(rk_t *rk) {
  uint64_t now = uv_now(rk->gw->m->loop), wait;
  if (rk->phase == PH_STOP) return;
  if (now - rk->drop_at >= rk->gw->reconnect_ms) {
    char why[900];
    snprintf(why, sizeof(why), "the connection to the gateway was lost for %llu ms: %s",
             (unsigned long long)(now - rk->drop_at), rk->drop_why);
    report_dead(rk, why);
    return;
  }
  wait = (uint64_t)BACKOFF_MIN_MS << (rk->attempt < 5 ? rk->attempt : 5);
  if (wait > BACKOFF_MAX_MS) wait = BACKOFF_MAX_MS;
  if (rk->attempt == 0) wait = 0 + 20; /* the first retry at once (a cut, not an outage) */
  rk->attempt++;
  uv_timer_start(&rk->timer, on_retry_timer, wait, 0);
}

/* After a reconnect: a cell without its reply may have ended while the channel was down, and
 * what the server kept for us came already. The kernel's execution_state decides: idle means
 * the reply is lost; busy means it still runs and its reply will come on the open channel. */
static void on_lost_probe(hreq_t *h, void *data) {
  rk_t *rk = rk_answered(data);
  json_t *doc;
  const char *st;
  pend_t *p, *next;
  if (rk == NULL) return;
  if (hreq_error(h, rk->drop_why, sizeof(rk->drop_why)) != 0) return; /* the next drop tells */
  doc = json_loadb(h->body.buf ? h->body.buf : "", h->body.len, 0, NULL);
  st = json_string_value(json_object_get(doc, "execution_state"));
  if (st != NULL && strcmp(st, "idle") == 0) {
    for (p = rk->pend; p; p = next) {
      next = p->next;
      if ((p->kind == P_EXEC || p->kind == P_COMM) && p->at_risk) {
        char id[sizeof(p->id)];
        snprintf(id, sizeof(id), "%s", p->id);
        pend_remove(rk, p);
        kh__kernel_on_lost(rk->k, id, KH_EREMOTE,
                           "the connection to the gateway dropped while this request ran and "
                           "its reply was lost (the kernel is idle)");
      }
    }
  } else if (st != NULL) {
    lost_check_arm(rk); /* still busy: look again */
  }
  json_decref(doc);
}

static void on_lost_timer(uv_timer_t *t) {
  rk_t *rk = t->data;
  char path[600];
  pend_t *p;
  int any = 0;
  if (rk->phase == PH_STOP || rk->hreq != NULL || rk->reconnecting) return;
  for (p = rk->pend; p; p = p->next)
    if ((p->kind == P_EXEC || p->kind == P_COMM) && p->at_risk) any = 1;
  if (!any) return;
  snprintf(path, sizeof(path), "/api/kernels/%s", rk->remote_id);
  rk->hreq = hreq_start(rk->gw, "GET", path, NULL, on_lost_probe, rk);
}

static void lost_check_arm(rk_t *rk) {
  uv_timer_start(&rk->timer, on_lost_timer, LOST_CHECK_MS, 0);
}

/* The server keeps a channel open to a kernel someone shut down (or culled): only its REST API
 * says the kernel is gone, as JupyterLab finds out by polling it. */
static void on_probe_answer(hreq_t *h, void *data) {
  rk_t *rk = rk_answered(data);
  char err[700];
  int rc;
  if (rk == NULL) return;
  if (answer_says_gone(rk, h, err, sizeof(err), &rc)) return;
  if (rc == 0) {
    json_t *doc = json_loadb(h->body.buf ? h->body.buf : "", h->body.len, 0, NULL);
    const char *st = json_string_value(json_object_get(doc, "execution_state"));
    int dead = st != NULL && strcmp(st, "dead") == 0;
    json_decref(doc);
    if (dead) {
      report_dead(rk, "the gateway reports the kernel dead");
      return;
    }
  }
  /* unreachable: the channel's own drop and reconnect decide */
}

static void on_probe_timer(uv_timer_t *t) {
  rk_t *rk = t->data;
  char path[600];
  if (rk->phase != PH_READY || rk->reconnecting || rk->hreq != NULL) return;
  snprintf(path, sizeof(path), "/api/kernels/%s", rk->remote_id);
  rk->hreq = hreq_start(rk->gw, "GET", path, NULL, on_probe_answer, rk);
}

/* Stopped once the channel, the REST call and the timer are all gone. */
static void rk_maybe_stopped(rk_t *rk) {
  kh_kernel_t *k = rk->k;
  if (rk->phase != PH_STOP || rk->stopped || rk->hreq != NULL || rk->wsi != NULL) return;
  rk->stopped = 1;
  pend_clear(rk);
  while (rk->out_head) {
    outmsg_t *o = rk->out_head;
    rk->out_head = o->next;
    free(o);
  }
  kh__sb_free(&rk->rx);
  k->backend = NULL;
  kh__kernel_on_stopped(k);
  rk_close_timers(rk);
}

/* --- the backend's ops --------------------------------------------------------------------- */

static void on_started(hreq_t *h, void *data) {
  rk_t *rk = data;
  char err[700];
  int rc;
  json_t *doc;
  const char *id;
  rk->hreq = NULL;
  if (rk->phase == PH_STOP) { /* destroyed while starting: shut down what the server started */
    if (h->code >= 200 && h->code < 300 && !rk->attached) {
      doc = json_loadb(h->body.buf ? h->body.buf : "", h->body.len, 0, NULL);
      id = json_string_value(json_object_get(doc, "id"));
      if (id != NULL) {
        char path[600];
        snprintf(path, sizeof(path), "/api/kernels/%.255s", id);
        hreq_start(rk->gw, "DELETE", path, NULL, NULL, NULL); /* nobody waits for it */
      }
      json_decref(doc);
    }
    rk_maybe_stopped(rk);
    return;
  }
  if ((rc = hreq_error(h, err, sizeof(err))) != 0) {
    if (h->code == 404 && rk->attached)
      snprintf(err, sizeof(err), "the gateway has no kernel \"%s\" (%s)", rk->remote_id, h->what);
    kh__kernel_on_ready(rk->k, rc, err);
    return;
  }
  doc = json_loadb(h->body.buf ? h->body.buf : "", h->body.len, 0, NULL);
  id = json_string_value(json_object_get(doc, "id"));
  if (id == NULL || strlen(id) >= sizeof(rk->remote_id) || strspn(id, "0123456789abcdefABCDEF-_.") != strlen(id) ||
      !*id) {
    json_decref(doc);
    snprintf(err, sizeof(err), "the gateway's answer to %s has no usable kernel id", h->what);
    kh__kernel_on_ready(rk->k, KH_EREMOTE, err);
    return;
  }
  snprintf(rk->remote_id, sizeof(rk->remote_id), "%s", id);
  json_decref(doc);
  ws_connect(rk);
}

/* The options a remote kernelhost kernel enforces itself (kernelhost-jupyter reads them from
 * the variable its kernelspec names); any other kernelspec cannot, and they are refused. */
static const char *const passed_keys[] = {"permissions", "filesystem", "limits", "sandbox", "cwd",
                                          NULL};

static json_t *passed_options(const kh_kernel_t *k) {
  json_t *o = json_object(), *v;
  int i;
  for (i = 0; passed_keys[i]; i++)
    if ((v = json_object_get(k->opts.all, passed_keys[i])) != NULL) json_object_set(o, passed_keys[i], v);
  if (json_object_size(o) == 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}

/* POST /api/kernels, with env (plus the passed options under `var`, when not NULL). */
static int post_kernel(rk_t *rk, const char *var) {
  kh_kernel_t *k = rk->k;
  json_t *body = json_pack("{s:s}", "name", k->opts.kernel_name ? k->opts.kernel_name : rk->gw->kernel_name);
  json_t *env = k->opts.env ? json_deep_copy(k->opts.env) : json_object();
  char *text;
  if (var != NULL) {
    json_t *po = passed_options(k);
    char *pt = po ? json_dumps(po, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (pt != NULL) json_object_set_new(env, var, json_string(pt));
    free(pt);
    json_decref(po);
  }
  if (body != NULL && json_object_size(env) > 0) json_object_set(body, "env", env);
  json_decref(env);
  text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (text != NULL) rk->hreq = hreq_start(rk->gw, "POST", "/api/kernels", text, on_started, rk);
  free(text);
  return rk->hreq ? 0 : KH_ENOMEM;
}

/* GET /api/kernelspecs/{name}: {name, spec: {argv, metadata, ...}, resources} */
static json_t *spec_metadata(json_t *doc) {
  return json_object_get(json_object_get(doc, "spec"), "metadata");
}

static void on_kernelspec(hreq_t *h, void *data) {
  rk_t *rk = rk_answered(data);
  kh_kernel_t *k;
  char err[900];
  int rc;
  json_t *doc, *po;
  const char *var, *first, *name;
  if (rk == NULL) return;
  k = rk->k;
  name = k->opts.kernel_name ? k->opts.kernel_name : rk->gw->kernel_name;
  if ((rc = hreq_error(h, err, sizeof(err))) != 0) {
    kh__kernel_on_ready(k, rc, err);
    return;
  }
  doc = json_loadb(h->body.buf ? h->body.buf : "", h->body.len, 0, NULL);
  var = json_string_value(
      json_object_get(json_object_get(spec_metadata(doc), "kernelhost"), "options_env"));
  if (var != NULL && strncmp(var, "KERNEL_", 7) == 0 && strspn(var, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") == strlen(var)) {
    snprintf(rk->passed_var, sizeof(rk->passed_var), "%s", var);
    json_decref(doc);
    if (post_kernel(rk, rk->passed_var) != 0) kh__kernel_on_ready(k, KH_ENOMEM, NULL);
    return;
  }
  json_decref(doc);
  po = passed_options(k);
  first = "permissions";
  {
    int i;
    for (i = 0; passed_keys[i]; i++)
      if (json_object_get(po, passed_keys[i]) != NULL) {
        first = passed_keys[i];
        break;
      }
  }
  json_decref(po);
  snprintf(err, sizeof(err),
           "option '%s' cannot be enforced from here in mode \"remote\": the gateway's kernelspec "
           "\"%.200s\" decides what its kernels may do, and it is no kernelhost kernelspec that "
           "takes such options (use one installed by kernelhost-jupyter install, or mode "
           "\"worker\" for a local kernel)",
           first, name);
  kh__kernel_on_ready(k, KH_ENOTSUP, err);
}

static int remote_start(kh_kernel_t *k) {
  kh_manager_t *m = k->m;
  gw_t *gw;
  rk_t *rk;
  int rc = 0;
  json_t *po;
  if ((gw = gw_get(m, &rc)) == NULL) return rc;
  if (gw->closing) return KH_ECLOSED;
  if ((rk = calloc(1, sizeof(*rk))) == NULL) return KH_ENOMEM;
  rk->k = k;
  rk->gw = gw;
  kh__uuid(rk->session);
  uv_timer_init(m->loop, &rk->timer);
  uv_timer_init(m->loop, &rk->probe);
  uv_unref((uv_handle_t *)&rk->timer);
  uv_unref((uv_handle_t *)&rk->probe);
  rk->timer.data = rk->probe.data = rk;
  rk->handles = 2;
  rk->attached = k->opts.remote_id != NULL;
  rk->shutdown = k->opts.shutdown >= 0 ? k->opts.shutdown : !rk->attached;
  po = passed_options(k);
  if (po != NULL && rk->attached) {
    json_decref(po);
    rk_close_timers(rk);
    kh__set_err(m->errmsg,
                "options permissions, filesystem, limits, sandbox and cwd apply when a kernel "
                "starts: a kernel attached by remoteId runs already");
    return KH_ENOTSUP;
  }
  if (po != NULL) {
    /* the kernelspec decides: ask it first (on_kernelspec) */
    char path[600];
    json_decref(po);
    snprintf(path, sizeof(path), "/api/kernelspecs/%s",
             k->opts.kernel_name ? k->opts.kernel_name : gw->kernel_name);
    rk->hreq = hreq_start(gw, "GET", path, NULL, on_kernelspec, rk);
  } else if (rk->attached) {
    char path[600];
    snprintf(rk->remote_id, sizeof(rk->remote_id), "%s", k->opts.remote_id);
    snprintf(path, sizeof(path), "/api/kernels/%s", rk->remote_id);
    rk->hreq = hreq_start(gw, "GET", path, NULL, on_started, rk);
  } else {
    post_kernel(rk, NULL);
  }
  if (rk->hreq == NULL) {
    rk_close_timers(rk);
    return KH_ENOMEM;
  }
  k->backend = rk;
  return 0;
}

static int remote_execute(kh_kernel_t *k, kh__request_t *r) {
  rk_t *rk = k->backend;
  pend_t *p;
  json_t *content;
  if (r->comm_type != NULL) {
    /* comm.c checked the content and ordered the buffers (/buffers/0 ...); the message carries
     * them beside its JSON, not in the content */
    content = json_loadb(r->code, r->len, 0, NULL);
    if (content == NULL) return KH_EINVAL;
    json_object_del(content, "buffers");
    if ((p = pend_new(rk, P_COMM, r->exec_id)) == NULL) {
      json_decref(content);
      return KH_ENOMEM;
    }
    return send_msg_bufs(rk, "shell", r->comm_type, content, &r->comm_bufs, 0, p->msg_id);
  }
  content = json_pack("{s:s%, s:b, s:b, s:{}, s:b, s:b}", "code", r->code, r->len, "silent",
                      r->silent, "store_history", r->store_history, "user_expressions",
                      "allow_stdin", r->allow_stdin, "stop_on_error", 0);
  if (content == NULL) return KH_ENOMEM;
  if ((p = pend_new(rk, P_EXEC, r->exec_id)) == NULL) {
    json_decref(content);
    return KH_ENOMEM;
  }
  return send_msg(rk, "shell", "execute_request", content, p->msg_id);
}

static int remote_interrupt(kh_kernel_t *k) {
  rk_t *rk = k->backend;
  char path[600];
  if (rk == NULL || rk->phase == PH_STOP) return 0;
  snprintf(path, sizeof(path), "/api/kernels/%s/interrupt", rk->remote_id);
  /* its own request: the kernel's one REST slot may hold a probe */
  return hreq_start(rk->gw, "POST", path, NULL, NULL, NULL) ? 0 : KH_ENOMEM;
}

static int remote_input_reply(kh_kernel_t *k, const char *value, size_t len) {
  rk_t *rk = k->backend;
  json_t *content = json_pack("{s:s%}", "value", value, len);
  if (content == NULL) return KH_ENOMEM;
  return send_msg(rk, "stdin", "input_reply", content, NULL);
}

static void on_restarted(hreq_t *h, void *data) {
  rk_t *rk = rk_answered(data);
  char err[700];
  int rc;
  if (rk == NULL) return;
  if ((rc = hreq_error(h, err, sizeof(err))) != 0) {
    rk->phase = PH_READY;
    kh__kernel_on_reset(rk->k, rc, err);
    return;
  }
  /* A new session on a new channel: nothing of the old one is replayed into it. */
  ws_close(rk);
  pend_clear(rk);
  while (rk->out_head) {
    outmsg_t *o = rk->out_head;
    rk->out_head = o->next;
    free(o);
  }
  rk->out_tail = NULL;
  kh__uuid(rk->session);
  rk->reconnecting = 0;
  ws_connect(rk);
}

static int remote_reset(kh_kernel_t *k) {
  rk_t *rk = k->backend;
  char path[600];
  if (rk->hreq != NULL) {
    hreq_cancel(rk->hreq);
    rk->hreq = NULL;
  }
  uv_timer_stop(&rk->timer);
  rk->phase = PH_RESTART;
  snprintf(path, sizeof(path), "/api/kernels/%s/restart", rk->remote_id);
  rk->hreq = hreq_start(rk->gw, "POST", path, NULL, on_restarted, rk);
  return rk->hreq ? 0 : KH_ENOMEM;
}

static void on_shut_down(hreq_t *h, void *data) {
  rk_t *rk = data;
  (void)h; /* a kernel the server cannot shut down is its to cull: the destroy completes */
  rk->hreq = NULL;
  rk_maybe_stopped(rk);
}

static void remote_stop(kh_kernel_t *k) {
  rk_t *rk = k->backend;
  int started;
  if (rk == NULL) {
    kh__kernel_on_stopped(k);
    return;
  }
  started = rk->remote_id[0] != 0;
  rk->phase = PH_STOP;
  uv_timer_stop(&rk->timer);
  ws_close(rk);
  if (rk->hreq != NULL && rk->hreq->cb == on_started) {
    rk_maybe_stopped(rk); /* on_started shuts down what it started */
    return;
  }
  if (rk->hreq != NULL) {
    hreq_cancel(rk->hreq);
    rk->hreq = NULL;
  }
  if (rk->shutdown && started) {
    char path[600];
    snprintf(path, sizeof(path), "/api/kernels/%s", rk->remote_id);
    rk->hreq = hreq_start(rk->gw, "DELETE", path, NULL, on_shut_down, rk);
  }
  rk_maybe_stopped(rk);
}

static int remote_interact(kh_kernel_t *k, const char *id, const char *op, const char *content,
                           size_t len, uint64_t timeout_ms) {
  rk_t *rk = k->backend;
  char type[64];
  json_t *c = json_loadb(content, len, 0, NULL);
  pend_t *p;
  (void)timeout_ms; /* interact.c's timer bounds it */
  if (c == NULL) return KH_EINVAL;
  if ((p = pend_new(rk, P_INTERACT, id)) == NULL) {
    json_decref(c);
    return KH_ENOMEM;
  }
  snprintf(type, sizeof(type), "%s_request", op);
  return send_msg(rk, "shell", type, c, p->msg_id);
}

static void remote_interact_cancel(kh_kernel_t *k, const char *id) {
  rk_t *rk = k->backend;
  pend_t *p;
  if (rk == NULL) return;
  for (p = rk->pend; p; p = p->next)
    if (p->kind == P_INTERACT && strcmp(p->id, id) == 0) {
      pend_remove(rk, p);
      return;
    }
}

static void remote_info(kh_kernel_t *k, json_t *info) {
  rk_t *rk = k->backend;
  if (rk == NULL) return;
  json_object_set_new(
      info, "remote",
      json_pack("{s:s, s:s, s:s, s:s, s:b}", "id", rk->remote_id, "url", rk->gw->base,
                "kernel_name", k->opts.kernel_name ? k->opts.kernel_name : rk->gw->kernel_name,
                "connection",
                rk->ws_open ? "open" : rk->reconnecting ? "reconnecting" : "connecting",
                "shutdown_on_destroy", rk->shutdown));
  if (rk->passed_var[0]) {
    json_t *po = passed_options(k), *names = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(po, key, v) json_array_append_new(names, json_string(key));
    json_decref(po);
    /* what the kernelhost kernelspec on the gateway was given to enforce, and how */
    json_object_set_new(json_object_get(info, "remote"), "passed_options", names);
    json_object_set_new(json_object_get(info, "remote"), "passed_in", json_string(rk->passed_var));
  }
}

const kh__backend_t kh__remote_backend = {
    .name = "remote",
    .manager_close = remote_manager_close,
    .manager_free = remote_manager_free,
    .start = remote_start,
    .execute = remote_execute,
    .interrupt = remote_interrupt,
    .input_reply = remote_input_reply,
    .reset = remote_reset,
    .stop = remote_stop,
    .info = remote_info,
    .interact = remote_interact,
    .interact_cancel = remote_interact_cancel,
    .no_host_functions = 1,
    .index = KH__BACKEND_REMOTE,
};

/* --- attach by id --------------------------------------------------------------------------- */

int kh_kernel_connect(kh_manager_t *m, const char *remote_id, const char *options_json,
                      char *id_out, size_t id_out_size, kh_kernel_create_cb cb, void *data) {
  json_t *o, *mode;
  char *text;
  int rc;
  if (m == NULL) return KH_EINVAL;
  m->errmsg[0] = '\0';
  if (remote_id == NULL || !*remote_id) {
    kh__set_err(m->errmsg, "kh_kernel_connect needs the remote kernel's id");
    return KH_EINVAL;
  }
  o = (options_json == NULL || !*options_json) ? json_object() : json_loads(options_json, 0, NULL);
  if (!json_is_object(o)) {
    json_decref(o);
    kh__set_err(m->errmsg, "options must be a JSON object");
    return KH_EOPTION;
  }
  mode = json_object_get(o, "mode");
  if (mode != NULL && !json_is_null(mode) &&
      !(json_is_string(mode) && strcmp(json_string_value(mode), "remote") == 0)) {
    json_decref(o);
    kh__set_err(m->errmsg, "option 'mode' must be \"remote\" (or absent) to connect a kernel");
    return KH_EOPTION;
  }
  if (json_object_get(o, "remote_id") != NULL || json_object_get(o, "remoteId") != NULL) {
    json_decref(o);
    kh__set_err(m->errmsg, "option 'remoteId' is the connect's own argument");
    return KH_EOPTION;
  }
  json_object_set_new(o, "mode", json_string("remote"));
  json_object_set_new(o, "remote_id", json_string(remote_id));
  if (json_object_get(o, "id") == NULL || json_is_null(json_object_get(o, "id")))
    json_object_set_new(o, "id", json_string(remote_id));
  text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (text == NULL) return KH_ENOMEM;
  rc = kh_kernel_create(m, text, id_out, id_out_size, cb, data);
  free(text);
  return rc;
}
