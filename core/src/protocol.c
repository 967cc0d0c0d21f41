/* protocol.c: the worker protocol's tables (protocol.h): message names, and the members each
 * message may carry, with their types, used to check every frame either end receives.
 * Constant data and pure functions: Thread: any. */
#include <stdio.h>
#include <string.h>

#include "protocol.h"

/* F_STR: a string without NULs (below); F_TEXT: any string, NULs included (user text that is
 * never compared as a C string); F_ARR: any array; F_ANY: any JSON value. */
typedef enum { F_STR = 1, F_TEXT, F_INT, F_BOOL, F_OBJ, F_STRMAP, F_STRS, F_ARR, F_ANY } ftype_t;

typedef struct {
  const char *name;
  ftype_t type;
  int required;
  size_t max; /* strings: the longest allowed, 0 for any */
} field_t;

#define MAX_FIELDS 8

static const struct {
  const char *name;
  kh__pdir_t dir;
} messages[KH__P_COUNT_] = {{NULL, 0},
#define KH__P_ROW_(kind, t, dir) {t, dir},
                            KH__PROTO_MESSAGES(KH__P_ROW_)
#undef KH__P_ROW_
};

/* The members of each message besides "t", as protocol.h lists them. "data" (ev, reply) is
 * written last by the worker and usually arrives split from the rest (frame.c). */
/* A message's members are exactly these: an unknown member is refused rather than ignored, so
 * that a forged frame cannot carry a field some later reader might trust (a kernel id, a
 * second request id), and so that both ends change together when the protocol does. */
static const field_t fields[KH__P_COUNT_][MAX_FIELDS] = {
    [KH__P_HELLO] = {{"pid", F_INT, 1, 0}, {"python", F_STR, 1, 64}},
    [KH__P_OPEN] = {{"id", F_STR, 1, KH__P_KERNEL_ID_MAX},
                    {"env", F_STRMAP, 0, 0},
                    {"cwd", F_STR, 0, 0},
                    {"sandbox", F_OBJ, 0, 0},
                    {"figure_formats", F_STRS, 0, 0},
                    {"binary", F_STR, 0, 16}},
    [KH__P_READY] = {{"sandbox", F_OBJ, 0, 0}, {"error", F_STR, 0, 0}, {"code", F_INT, 0, 0}},
    [KH__P_EXEC] = {{"id", F_STR, 1, KH__P_EXEC_ID_MAX},
                    {"code", F_STR, 1, 0},
                    {"silent", F_BOOL, 1, 0},
                    {"store_history", F_BOOL, 1, 0},
                    {"allow_stdin", F_BOOL, 1, 0}},
    [KH__P_EV] = {{"type", F_STR, 1, 32},
                  {"id", F_STR, 1, KH__P_EXEC_ID_MAX},
                  {"data", F_OBJ, 1, 0},
                  {"bufs", F_STRS, 0, 0}},
    [KH__P_REPLY] = {{"id", F_STR, 1, KH__P_EXEC_ID_MAX},
                     {"data", F_OBJ, 1, 0},
                     {"bufs", F_STRS, 0, 0}},
    [KH__P_INTERRUPT] = {{"id", F_STR, 1, KH__P_EXEC_ID_MAX}},
    [KH__P_INPUT] = {{"value", F_TEXT, 1, 0}},
    [KH__P_FATAL] = {{"message", F_STR, 1, 0}, {"module", F_STR, 0, 0}},
    [KH__P_INTERACT] = {{"id", F_STR, 1, KH__P_EXEC_ID_MAX},
                        {"op", F_STR, 1, 31},
                        {"content", F_OBJ, 1, 0},
                        {"timeout_ms", F_INT, 1, 0}},
    [KH__P_ANSWER] = {{"id", F_STR, 1, KH__P_EXEC_ID_MAX},
                      {"status", F_INT, 0, 0},
                      {"data", F_OBJ, 1, 0}},
    [KH__P_CANCEL] = {{"id", F_STR, 1, KH__P_EXEC_ID_MAX}},
    [KH__P_EXPOSE] = {{"names", F_STRS, 1, 0}},
    [KH__P_CALL] = {{"id", F_INT, 1, 0},
                    {"name", F_STR, 1, KH__P_HOSTFN_NAME_MAX},
                    {"cell", F_BOOL, 1, 0},
                    {"args", F_ARR, 1, 0},
                    {"bufs", F_STRS, 0, 0}},
    [KH__P_RESULT] = {{"id", F_INT, 1, 0},
                      {"value", F_ANY, 0, 0},
                      {"error", F_TEXT, 0, 0},
                      {"bufs", F_STRS, 0, 0}},
    [KH__P_FORK] = {{"seq", F_INT, 1, 0}, {"pooled", F_BOOL, 0, 0}, {"pids_cgroup", F_STR, 0, 0}},
    [KH__P_FORKED] = {{"seq", F_INT, 1, 0}, {"pid", F_INT, 0, 0}, {"error", F_STR, 0, 0}},
    [KH__P_COMM] = {{"id", F_STR, 1, KH__P_EXEC_ID_MAX},
                    {"msg_type", F_STR, 1, 31},
                    {"content", F_OBJ, 1, 0},
                    {"bufs", F_STRS, 0, 0}},
};

const char *kh__proto_name(kh__pmsg_t kind) {
  return kind > KH__P_NONE && kind < KH__P_COUNT_ ? messages[kind].name : NULL;
}

kh__pmsg_t kh__proto_kind(const char *name) {
  int i;
  if (name == NULL) return KH__P_NONE;
  for (i = 1; i < KH__P_COUNT_; i++)
    if (strcmp(messages[i].name, name) == 0) return (kh__pmsg_t)i;
  return KH__P_NONE;
}

/* A string member must hold no NUL: ids are compared as C strings, and an id cut at an
 * embedded NUL could equal another request's. */
static int plain_string(const json_t *v, size_t max) {
  size_t len;
  if (!json_is_string(v)) return 0;
  len = json_string_length(v);
  return strlen(json_string_value(v)) == len && (max == 0 || len <= max);
}

static int type_ok(const json_t *v, const field_t *f) {
  const char *k;
  size_t i;
  json_t *x;
  switch (f->type) {
    case F_STR:
      return plain_string(v, f->max);
    case F_TEXT:
      return json_is_string(v);
    case F_INT:
      return json_is_integer(v);
    case F_BOOL:
      return json_is_boolean(v);
    case F_OBJ:
      return json_is_object(v);
    case F_STRMAP:
      if (!json_is_object(v)) return 0;
      json_object_foreach((json_t *)v, k, x) {
        if (!plain_string(x, 0) || strlen(k) == 0) return 0;
      }
      return 1;
    case F_STRS:
      if (!json_is_array(v)) return 0;
      json_array_foreach(v, i, x) {
        if (!plain_string(x, 0)) return 0;
      }
      return 1;
    case F_ARR:
      return json_is_array(v);
    case F_ANY:
      return v != NULL;
  }
  return 0;
}

/* Fills why (for the death report or the worker's fatal message) and refuses the frame. The
 * frame's own strings are cut short in it: they come from the other side. */
static kh__pmsg_t refuse(char *why, size_t n, const char *fmt, const char *a, const char *b) {
  snprintf(why, n, fmt, a, b);
  return KH__P_NONE;
}

kh__pmsg_t kh__proto_check(const json_t *msg, kh__pdir_t dir, int data_split, char *why, size_t n) {
  const char *t = json_string_value(json_object_get(msg, "t")), *key;
  kh__pmsg_t kind = kh__proto_kind(t);
  const field_t *fs;
  json_t *v;
  int i;
  if (kind == KH__P_NONE)
    return refuse(why, n, "unknown message \"%.40s\"%s", t ? t : "(no \"t\")", "");
  /* A worker that sends "exec" or "open" is confused or hostile, never merely new. */
  if (messages[kind].dir != dir)
    return refuse(why, n, "message \"%s\" travels the other way%s", t, "");
  fs = fields[kind];
  json_object_foreach((json_t *)msg, key, v) {
    const field_t *f = NULL;
    if (strcmp(key, "t") == 0) continue;
    for (i = 0; i < MAX_FIELDS && fs[i].name != NULL && f == NULL; i++)
      if (strcmp(fs[i].name, key) == 0) f = &fs[i];
    if (f == NULL) return refuse(why, n, "unknown member \"%.40s\" in \"%s\"", key, t);
    if (!type_ok(v, f)) return refuse(why, n, "member \"%s\" of \"%s\" has the wrong type", key, t);
  }
  for (i = 0; i < MAX_FIELDS && fs[i].name != NULL; i++) {
    int split = data_split && strcmp(fs[i].name, "data") == 0;
    if (fs[i].required && !split && json_object_get(msg, fs[i].name) == NULL)
      return refuse(why, n, "\"%s\" without its member \"%s\"", t, fs[i].name);
  }
  /* Only events and replies carry a payload worth splitting; any other "data" is a stray. */
  if (data_split && !(kind == KH__P_EV || kind == KH__P_REPLY || kind == KH__P_ANSWER))
    return refuse(why, n, "\"%s\" carries no payload%s", t, "");
  /* A result is the one or the other. */
  if (kind == KH__P_RESULT &&
      (json_object_get(msg, "value") == NULL) == (json_object_get(msg, "error") == NULL))
    return refuse(why, n, "\"result\" needs exactly one of \"value\" and \"error\"%s", "", "");
  return kind;
}
