/* comm.c: Jupyter comms from the host to a kernel (kh_kernel_comm_send): the checks every
 * message passes before anything is queued, and the queue entry it becomes. Comms from the
 * kernel to the host need nothing here: Python's comm_open/comm_msg/comm_close are events like
 * any other (core/python/_kh_comm.py emits them). Thread: loop.
 *
 * A comm message is a request of the kernel's one FIFO (request.c), as Jupyter's shell channel
 * carries comm messages beside execute requests: it runs after the cells queued before it, one
 * at a time, bracketed by busy and idle status events, and what its handler prints or displays
 * carries its own execution id. It differs from a cell in what it never does: it has no caller
 * to answer (its completion is internal), never counts, never enters history, and is never
 * aborted by a failed cell before it (ipykernel aborts only execute requests). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The longest comm id the core keeps track of. Ids are uuid4 hex (32 bytes) in every library
 * seen; a longer one from the host is refused, and one from a kernel is left untracked (the
 * host then cannot send on it), so that a cell cannot make the host keep long strings. */
#define COMM_ID_MAX 256

/* The message types a host may send, as static strings the request keeps. */
static const char *const comm_types[] = {"comm_open", "comm_msg", "comm_close"};

/* The completion of a comm message: nobody waits for it, but it is counted in m->pending
 * like a cell's, so the loop stays alive until the kernel has handled the message. */
static void comm_done(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  (void)m;
  (void)rep;
  (void)status;
  (void)data;
}

/* Checks the content's shape and fills in what Jupyter makes optional (data). Returns 0, or
 * KH_EINVAL with errmsg naming the member. */
static int check_content(json_t *doc, const char *type, char *errmsg) {
  json_t *id = json_object_get(doc, "comm_id"), *v;
  if (!json_is_object(doc)) {
    kh__set_err(errmsg, "%s content must be a JSON object", type);
    return KH_EINVAL;
  }
  if (!json_is_string(id) || json_string_length(id) == 0) {
    kh__set_err(errmsg, "%s content needs \"comm_id\", a non-empty string", type);
    return KH_EINVAL;
  }
  if (strcmp(type, "comm_open") == 0 && !json_is_string(json_object_get(doc, "target_name"))) {
    kh__set_err(errmsg, "comm_open content needs \"target_name\", a string");
    return KH_EINVAL;
  }
  v = json_object_get(doc, "data");
  if (v == NULL || json_is_null(v)) {
    json_object_set_new(doc, "data", json_object());
  } else if (!json_is_object(v)) {
    kh__set_err(errmsg, "%s content's \"data\" must be an object", type);
    return KH_EINVAL;
  }
  v = json_object_get(doc, "metadata");
  if (v != NULL && !json_is_null(v) && !json_is_object(v)) {
    kh__set_err(errmsg, "%s content's \"metadata\" must be an object", type);
    return KH_EINVAL;
  }
  return 0;
}

/* --- the kernel's open comms -------------------------------------------------------------
 * The core knows which comms of a kernel are open, from what the host sent and from the
 * kernel's own comm events (seen here before any subscriber sees them), so that a message on a
 * comm that is not open is refused at once (KH_ECLOSED) in every binding, instead of being
 * dropped by the kernel without a word. k->comms is a JSON object used as a set of ids. */

static int comm_is_open(kh_kernel_t *k, const char *id) {
  return k->comms != NULL && json_object_get(k->comms, id) != NULL;
}

static void comm_opened(kh_kernel_t *k, const char *id, const json_t *target) {
  if (strlen(id) >= COMM_ID_MAX) return;
  if (k->comms == NULL && (k->comms = json_object()) == NULL) return;
  json_object_set_new(k->comms, id, json_string(json_is_string(target) ? json_string_value(target)
                                                                      : ""));
}

static void comm_closed(kh_kernel_t *k, const char *id) {
  if (k->comms != NULL) json_object_del(k->comms, id);
}

void kh__comm_event(kh_kernel_t *k, int type, const char *json, size_t len) {
  json_t *doc, *id;
  if (type != KH_EVENT_COMM_OPEN && type != KH_EVENT_COMM_CLOSE) return;
  doc = json_loadb(json, len, 0, NULL);
  id = json_object_get(doc, "comm_id");
  if (json_is_string(id) && strlen(json_string_value(id)) == json_string_length(id)) {
    if (type == KH_EVENT_COMM_OPEN)
      comm_opened(k, json_string_value(id), json_object_get(doc, "target_name"));
    else
      comm_closed(k, json_string_value(id));
  }
  json_decref(doc);
}

void kh__comm_forget(kh_kernel_t *k) {
  json_decref(k->comms);
  k->comms = NULL;
}

/* The N of a path "/buffers/N" (decimal, no leading zero), or SIZE_MAX for any other path. */
static size_t buffer_index(const char *path) {
  const char *p;
  size_t n = 0;
  if (path == NULL || strncmp(path, "/buffers/", 9) != 0) return SIZE_MAX;
  p = path + 9;
  if (*p == '\0' || (p[0] == '0' && p[1] != '\0')) return SIZE_MAX;
  for (; *p; p++) {
    if (*p < '0' || *p > '9' || n > 1000) return SIZE_MAX;
    n = n * 10 + (size_t)(*p - '0');
  }
  return n;
}

/* A message's buffers are Jupyter's list: n kh_buffer_t at paths "/buffers/0" .. "/buffers/n-1"
 * (in any order, each once), where content's "buffers" holds nulls; the array is made when the
 * content has none. Returns 0, KH_EINVAL or KH_ETOOBIG with errmsg. */
static int check_buffers(json_t *doc, const kh_buffer_t *b, size_t n, const char *type,
                         char *errmsg) {
  json_t *arr = json_object_get(doc, "buffers");
  size_t i;
  if (n > KH__FRAME_BUFS_MAX) {
    kh__set_err(errmsg, "%s: %zu buffers, the most a message carries is %d", type, n,
                KH__FRAME_BUFS_MAX);
    return KH_EINVAL;
  }
  if (arr == NULL && n > 0) {
    arr = json_array();
    for (i = 0; arr != NULL && i < n; i++) json_array_append_new(arr, json_null());
    if (arr == NULL || json_object_set_new(doc, "buffers", arr) != 0) return KH_ENOMEM;
  } else if (arr != NULL && (!json_is_array(arr) || json_array_size(arr) != n)) {
    kh__set_err(errmsg,
                "%s content's \"buffers\" must be an array of %zu nulls, one per buffer given",
                type, n);
    return KH_EINVAL;
  }
  for (i = 0; i < n; i++) {
    if (buffer_index(b[i].path) >= n) {
      kh__set_err(errmsg, "%s: buffer path \"%.60s\" is not \"/buffers/N\" with N < %zu", type,
                  b[i].path ? b[i].path : "(NULL)", n);
      return KH_EINVAL;
    }
    if (b[i].data == NULL && b[i].len > 0) {
      kh__set_err(errmsg, "%s: buffer %zu has no data", type, i);
      return KH_EINVAL;
    }
    if (b[i].len > KH__FRAME_MAX) {
      kh__set_err(errmsg, "%s: buffer %zu is %zu bytes, over the limit of %u", type, i, b[i].len,
                  KH__FRAME_MAX);
      return KH_ETOOBIG;
    }
  }
  /* Each path once, each leading to a null. */
  return kh__bufs_check(doc, b, n, errmsg);
}

/* Whether the message fits the comm's state: comm_open needs a new id, the others an open comm.
 * Returns 0, KH_EINVAL or KH_ECLOSED with errmsg. */
static int check_state(kh_kernel_t *k, json_t *doc, const char *type, char *errmsg) {
  json_t *v = json_object_get(doc, "comm_id");
  const char *id = json_string_value(v);
  if (strlen(id) != json_string_length(v) || strlen(id) >= COMM_ID_MAX) {
    kh__set_err(errmsg, "%s: \"comm_id\" must be under %d bytes, without NUL", type, COMM_ID_MAX);
    return KH_EINVAL;
  }
  if (type == comm_types[0] && comm_is_open(k, id)) {
    kh__set_err(errmsg, "comm \"%.80s\" of kernel \"%s\" is open already", id, k->id);
    return KH_EINVAL;
  }
  if (type != comm_types[0] && !comm_is_open(k, id)) {
    kh__set_err(errmsg, "kernel \"%s\" has no open comm \"%.80s\" (closed, or never opened)", k->id,
                id);
    return KH_ECLOSED;
  }
  return 0;
}

int kh_kernel_comm_send(kh_manager_t *m, const char *kernel_id, const char *msg_type,
                        const char *content_json, size_t len, const kh_buffer_t *buffers,
                        size_t nbuffers) {
  return kh__comm_send(m, kernel_id, msg_type, content_json, len, buffers, nbuffers, NULL);
}

int kh__comm_send(kh_manager_t *m, const char *kernel_id, const char *msg_type,
                  const char *content_json, size_t len, const kh_buffer_t *buffers,
                  size_t nbuffers, char *exec_id_out) {
  kh_kernel_t *k;
  kh__request_t *r;
  const char *type = NULL;
  json_error_t jerr;
  json_t *doc;
  char *text;
  size_t i;
  int rc;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_DEAD) {
    kh__set_err(m->errmsg, "kernel \"%s\" is dead: %s", kernel_id, k->dead_reason);
    return KH_EKERNELDEAD;
  }
  /* Queued behind the cell that waits for this very host function: it could never run. */
  if (kh__hostcall_busy(k)) {
    kh__set_err(m->errmsg, "kernel \"%s\" waits for the host function that is running",
                kernel_id);
    return KH_EBUSY;
  }
  for (i = 0; msg_type != NULL && i < sizeof(comm_types) / sizeof(comm_types[0]); i++)
    if (strcmp(msg_type, comm_types[i]) == 0) type = comm_types[i];
  if (type == NULL) {
    kh__set_err(m->errmsg, "unknown comm message type \"%.40s\" (comm_open, comm_msg, comm_close)",
                msg_type ? msg_type : "(NULL)");
    return KH_EINVAL;
  }
  if (content_json == NULL || (nbuffers > 0 && buffers == NULL)) {
    kh__set_err(m->errmsg, "%s: content must not be NULL", type);
    return KH_EINVAL;
  }
  if (len > m->opts.max_code_bytes) {
    kh__set_err(m->errmsg, "%s content is %zu bytes, over the limit of %zu (maxCodeBytes)", type,
                len, m->opts.max_code_bytes);
    return KH_ETOOBIG;
  }
  /* Checked before parsing, so that bad text is KH_EENCODING in every binding, as for code:
   * a NUL byte is no JSON, and bytes that are not UTF-8 could reach no Python str. */
  if (memchr(content_json, '\0', len) != NULL || !kh__utf8_valid(content_json, len)) {
    kh__set_err(m->errmsg, "%s content is not valid UTF-8 text (or holds a NUL byte)", type);
    return KH_EENCODING;
  }
  doc = json_loadb(content_json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
  if (doc == NULL) {
    kh__set_err(m->errmsg, "%s content is not JSON: %s", type, jerr.text);
    return KH_EINVAL;
  }
  if ((rc = check_content(doc, type, m->errmsg)) != 0 ||
      (rc = check_buffers(doc, buffers, nbuffers, type, m->errmsg)) != 0 ||
      (rc = check_state(k, doc, type, m->errmsg)) != 0) {
    json_decref(doc);
    return rc;
  }
  text = json_dumps(doc, JSON_COMPACT);
  r = text ? calloc(1, sizeof(*r)) : NULL;
  if (r == NULL) {
    free(text);
    json_decref(doc);
    return KH_ENOMEM;
  }
  r->code = text;
  r->len = strlen(text);
  r->comm_type = type;
  /* The buffers in the order of their indexes: Python gets them as a list (msg["buffers"]). */
  for (i = 0; i < nbuffers; i++) {
    size_t j = 0;
    while (buffer_index(buffers[j].path) != i) j++;
    if (kh__bufs_add_copy(&r->comm_bufs, buffers[j].path, buffers[j].data, buffers[j].len) != 0) {
      kh__request_free(r);
      json_decref(doc);
      return KH_ENOMEM;
    }
  }
  /* Open from now on for the host's next message; closed at once by its own comm_close. */
  if (type == comm_types[0])
    comm_opened(k, json_string_value(json_object_get(doc, "comm_id")),
                json_object_get(doc, "target_name"));
  else if (type == comm_types[2])
    comm_closed(k, json_string_value(json_object_get(doc, "comm_id")));
  json_decref(doc);
  kh__uuid(r->exec_id);
  if (exec_id_out != NULL) memcpy(exec_id_out, r->exec_id, KH__EXEC_ID_MAX);
  r->silent = 1;
  r->cb = comm_done;
  kh__kernel_enqueue(k, r);
  return 0;
}
