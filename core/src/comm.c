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

int kh_kernel_comm_send(kh_manager_t *m, const char *kernel_id, const char *msg_type,
                        const char *content_json, size_t len, const kh_buffer_t *buffers,
                        size_t nbuffers) {
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
  if (nbuffers > 0) {
    kh__set_err(m->errmsg, "%s: binary buffers are not carried yet", type);
    return KH_ENOTSUP;
  }
  doc = json_loadb(content_json, len, JSON_REJECT_DUPLICATES, &jerr);
  if (doc == NULL) {
    kh__set_err(m->errmsg, "%s content is not JSON: %s", type, jerr.text);
    return KH_EINVAL;
  }
  if ((rc = check_content(doc, type, m->errmsg)) != 0) {
    json_decref(doc);
    return rc;
  }
  text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  r = text ? calloc(1, sizeof(*r)) : NULL;
  if (r == NULL) {
    free(text);
    return KH_ENOMEM;
  }
  r->code = text;
  r->len = strlen(text);
  r->comm_type = type;
  kh__uuid(r->exec_id);
  r->silent = 1;
  r->cb = comm_done;
  kh__kernel_enqueue(k, r);
  return 0;
}
