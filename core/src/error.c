/* error.c: kernelhost's error codes, their names and descriptions, and the names of event
 * types. Thread: any (everything here is static data).
 *
 * The codes come from one X-macro table in kernelhost.h, so the enum, the names and the texts
 * cannot drift apart. libuv's own codes pass through unchanged (a failed uv_spawn reaches the
 * caller as UV_ENOENT): kernelhost's live below -30000, far from libuv's (all above -4100),
 * so one int says which library spoke. */
#include <string.h>

#include "internal.h"

const char *kh_strerror(int err) {
  switch (err) {
#define KH_STRERROR_CASE_(name, code, msg) \
  case KH_##name:                          \
    return msg;
    KH_ERRNO_MAP(KH_STRERROR_CASE_)
#undef KH_STRERROR_CASE_
    case 0:
      return "success";
    default:
      return uv_strerror(err);
  }
}

/* Names are what the bindings hand to users ("KH_ENOTFOUND" as a Lua third return value, as a
 * JS Error's code): stable strings that tests assert on, unlike the texts. */
const char *kh_err_name(int err) {
  switch (err) {
#define KH_ERRNAME_CASE_(name, code, msg) \
  case KH_##name:                         \
    return "KH_" #name;
    KH_ERRNO_MAP(KH_ERRNAME_CASE_)
#undef KH_ERRNAME_CASE_
    case 0:
      return "OK";
    default:
      /* libuv names its codes without the UV_ prefix ("ENOENT"); say where they come from. */
      switch (err) {
#define KH_UVNAME_CASE_(name, msg) \
  case UV_##name:                  \
    return "UV_" #name;
        UV_ERRNO_MAP(KH_UVNAME_CASE_)
#undef KH_UVNAME_CASE_
        default:
          return "KH_EUNKNOWN";
      }
  }
}

/* Jupyter's message types, indexed by kh_event_type_t; index 0 is the "every event" name the
 * bindings use for subscriptions ("*"). */
static const char *const event_names[KH_EVENT_TYPE_MAX_] = {"*",
                                                            "stream",
                                                            "display_data",
                                                            "update_display_data",
                                                            "execute_result",
                                                            "execute_error",
                                                            "clear_output",
                                                            "input_request",
                                                            "status",
                                                            "comm_open",
                                                            "comm_msg",
                                                            "comm_close"};

const char *kh_event_type_name(int type) {
  if (type < 0 || type >= KH_EVENT_TYPE_MAX_) return NULL;
  return event_names[type];
}

int kh_event_type_from_name(const char *name) {
  int i;
  if (name == NULL) return KH_EINVAL;
  for (i = 0; i < KH_EVENT_TYPE_MAX_; i++)
    if (strcmp(event_names[i], name) == 0) return i;
  return KH_EINVAL;
}
