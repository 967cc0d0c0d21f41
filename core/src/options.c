/* options.c: validation of kernel and manager options given as JSON. Keys are accepted in
 * camelCase or snake_case (so Lua and JS callers both use their own style); every error names
 * the option as the caller spelled it. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* "max_execution_time" and "maxExecutionTime" both become "maxexecutiontime". */
static void norm_key(const char *in, char *out, size_t n) {
  size_t j = 0;
  for (; *in && j + 1 < n; in++)
    if (*in != '_' && *in != '-') out[j++] = (char)tolower((unsigned char)*in);
  out[j] = '\0';
}

const char *kh__mode_name(kh__mode_t mode) {
  return mode == KH__MODE_MAIN_THREAD ? "main_thread" : "worker";
}

static const char *json_type_name(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT:
      return "an object";
    case JSON_ARRAY:
      return "an array";
    case JSON_STRING:
      return "a string";
    case JSON_INTEGER:
      return "an integer";
    case JSON_REAL:
      return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
      return "a boolean";
    default:
      return "null";
  }
}

/* A non-negative integral number of milliseconds or bytes. */
static int get_uint(const json_t *v, const char *key, uint64_t *out, char *errmsg) {
  double d;
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i >= 0) {
      *out = (uint64_t)i;
      return 0;
    }
  } else if (json_is_real(v)) {
    d = json_real_value(v);
    if (d >= 0 && d <= 9007199254740992.0 && floor(d) == d) {
      *out = (uint64_t)d;
      return 0;
    }
  }
  kh__set_err(errmsg, "option '%s' must be a non-negative integer, got %s", key, json_type_name(v));
  return KH_EOPTION;
}

static int check_string(const json_t *v, const char *key, size_t max, char *errmsg) {
  if (!json_is_string(v)) {
    kh__set_err(errmsg, "option '%s' must be a string, got %s", key, json_type_name(v));
    return KH_EOPTION;
  }
  if (json_string_length(v) == 0 || json_string_length(v) > max) {
    kh__set_err(errmsg, "option '%s' must be 1 to %zu characters long", key, max);
    return KH_EOPTION;
  }
  if (strlen(json_string_value(v)) != json_string_length(v)) {
    kh__set_err(errmsg, "option '%s' must not contain NUL", key);
    return KH_EOPTION;
  }
  return 0;
}

static int check_bool(const json_t *v, const char *key, char *errmsg) {
  if (json_is_boolean(v)) return 0;
  kh__set_err(errmsg, "option '%s' must be a boolean, got %s", key, json_type_name(v));
  return KH_EOPTION;
}

static int check_string_array(const json_t *v, const char *key, char *errmsg) {
  size_t i;
  json_t *e;
  if (!json_is_array(v)) {
    kh__set_err(errmsg, "option '%s' must be an array of strings, got %s", key, json_type_name(v));
    return KH_EOPTION;
  }
  json_array_foreach(v, i, e) {
    if (!json_is_string(e)) {
      kh__set_err(errmsg, "option '%s[%zu]' must be a string, got %s", key, i, json_type_name(e));
      return KH_EOPTION;
    }
  }
  return 0;
}

/* Copies a sub-object with normalised keys, validating each against `spec`: a list of
 * "canonicalName:type" with type one of s (string), b (bool), u (uint), a (string array),
 * n (bool or string array). */
static int norm_object(const json_t *v, const char *key, const char *const *spec, json_t **out,
                       char *errmsg) {
  const char *k;
  json_t *e;
  json_t *o;
  char nk[64], ns[64], path[160];
  if (!json_is_object(v)) {
    kh__set_err(errmsg, "option '%s' must be an object, got %s", key, json_type_name(v));
    return KH_EOPTION;
  }
  o = json_object();
  json_object_foreach((json_t *)v, k, e) {
    const char *const *s;
    const char *canon = NULL;
    char type = 0;
    int rc = 0;
    uint64_t u;
    norm_key(k, nk, sizeof(nk));
    for (s = spec; *s; s++) {
      const char *colon = strchr(*s, ':');
      char name[64];
      snprintf(name, sizeof(name), "%.*s", (int)(colon - *s), *s);
      norm_key(name, ns, sizeof(ns));
      if (strcmp(ns, nk) == 0) {
        canon = *s;
        type = colon[1];
        break;
      }
    }
    snprintf(path, sizeof(path), "%s.%s", key, k);
    if (canon == NULL) {
      kh__set_err(errmsg, "unknown option '%s'", path);
      json_decref(o);
      return KH_EOPTION;
    }
    switch (type) {
      case 's':
        rc = check_string(e, path, 4096, errmsg);
        break;
      case 'b':
        rc = check_bool(e, path, errmsg);
        break;
      case 'u':
        rc = get_uint(e, path, &u, errmsg);
        break;
      case 'a':
        rc = check_string_array(e, path, errmsg);
        break;
      case 'n':
        rc = json_is_boolean(e) ? 0 : check_string_array(e, path, errmsg);
        if (rc) kh__set_err(errmsg, "option '%s' must be a boolean or an array of strings", path);
        break;
    }
    if (rc) {
      json_decref(o);
      return rc;
    }
    {
      char name[64];
      snprintf(name, sizeof(name), "%.*s", (int)(strchr(canon, ':') - canon), canon);
      json_object_set(o, name, e);
    }
  }
  *out = o;
  return 0;
}

static const char *const fs_spec[] = {"enabled:b", "root:s", "mountPoint:s", "readOnly:b", NULL};
static const char *const perm_spec[] = {"read:a", "write:a", "net:n", "env:n", "run:b", NULL};
static const char *const limit_spec[] = {"memoryBytes:u", "cpuSeconds:u", "maxOutputBytes:u",
                                         "maxProcesses:u", NULL};

static int id_ok(const char *s) {
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("._:-", *s)) return 0;
  return 1;
}

int kh__kernel_opts_parse(kh__kernel_opts_t *o, const char *text, char *errmsg) {
  json_t *root = NULL, *e, *sub;
  json_error_t jerr;
  const char *k;
  char nk[64];
  int rc = 0;

  memset(o, 0, sizeof(*o));
  o->all = json_object();
  if (text != NULL && *text) {
    root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
      kh__set_err(errmsg, "kernel options are not valid JSON: %s", jerr.text);
      rc = KH_EOPTION;
      goto fail;
    }
    if (!json_is_object(root)) {
      kh__set_err(errmsg, "kernel options must be an object, got %s", json_type_name(root));
      rc = KH_EOPTION;
      goto fail;
    }
    json_object_foreach(root, k, e) {
      if (json_is_null(e)) continue; /* an absent option: JS undefined / Lua nil */
      norm_key(k, nk, sizeof(nk));
      if (strcmp(nk, "mode") == 0) {
        if (json_is_string(e) && strcmp(json_string_value(e), "worker") == 0) {
          o->mode = KH__MODE_WORKER;
        } else if (json_is_string(e) && strcmp(json_string_value(e), "main_thread") == 0) {
          o->mode = KH__MODE_MAIN_THREAD;
        } else {
          kh__set_err(errmsg, "option '%s' must be \"worker\" or \"main_thread\", got %s%s%s", k,
                      json_is_string(e) ? "\"" : "",
                      json_is_string(e) ? json_string_value(e) : json_type_name(e),
                      json_is_string(e) ? "\"" : "");
          rc = KH_EOPTION;
          goto fail;
        }
      } else if (strcmp(nk, "id") == 0) {
        if ((rc = check_string(e, k, KH__ID_MAX - 1, errmsg))) goto fail;
        if (!id_ok(json_string_value(e))) {
          kh__set_err(errmsg, "option '%s' may hold only letters, digits and . _ : -", k);
          rc = KH_EOPTION;
          goto fail;
        }
        snprintf(o->id, sizeof(o->id), "%s", json_string_value(e));
      } else if (strcmp(nk, "namespace") == 0) {
        if ((rc = check_string(e, k, 255, errmsg))) goto fail;
        o->namespace_ = kh__strdup(json_string_value(e));
      } else if (strcmp(nk, "maxexecutiontime") == 0) {
        if ((rc = get_uint(e, k, &o->max_execution_ms, errmsg))) goto fail;
        json_object_set(o->all, "maxExecutionTime", e);
      } else if (strcmp(nk, "inactivitytimeout") == 0) {
        if ((rc = get_uint(e, k, &o->inactivity_ms, errmsg))) goto fail;
        json_object_set(o->all, "inactivityTimeout", e);
      } else if (strcmp(nk, "filesystem") == 0) {
        if ((rc = norm_object(e, k, fs_spec, &sub, errmsg))) goto fail;
        json_object_set_new(o->all, "filesystem", sub);
      } else if (strcmp(nk, "permissions") == 0) {
        if ((rc = norm_object(e, k, perm_spec, &sub, errmsg))) goto fail;
        json_object_set_new(o->all, "permissions", sub);
      } else if (strcmp(nk, "limits") == 0) {
        if ((rc = norm_object(e, k, limit_spec, &sub, errmsg))) goto fail;
        json_object_set_new(o->all, "limits", sub);
      } else if (strcmp(nk, "env") == 0) {
        const char *ek;
        json_t *ev;
        if (!json_is_object(e)) {
          kh__set_err(errmsg, "option '%s' must be an object of strings, got %s", k,
                      json_type_name(e));
          rc = KH_EOPTION;
          goto fail;
        }
        json_object_foreach(e, ek, ev) {
          if (!json_is_string(ev) || !*ek || strchr(ek, '=')) {
            kh__set_err(errmsg,
                        "option '%s.%s' must be a string (and the name non-empty, "
                        "without '=')",
                        k, ek);
            rc = KH_EOPTION;
            goto fail;
          }
        }
        json_object_set(o->all, "env", e);
      } else if (strcmp(nk, "thread") == 0) {
        if (!json_is_string(e) || (strcmp(json_string_value(e), "kernel") != 0 &&
                                   strcmp(json_string_value(e), "host") != 0)) {
          kh__set_err(errmsg, "option '%s' must be \"kernel\" or \"host\"", k);
          rc = KH_EOPTION;
          goto fail;
        }
        o->host_thread = strcmp(json_string_value(e), "host") == 0;
        json_object_set(o->all, "thread", e);
      } else if (strcmp(nk, "cwd") == 0) {
        if ((rc = check_string(e, k, 4096, errmsg))) goto fail;
        json_object_set(o->all, "cwd", e);
      } else if (strcmp(nk, "autorestart") == 0) {
        if ((rc = check_bool(e, k, errmsg))) goto fail;
        json_object_set(o->all, "autoRestart", e);
      } else if (strcmp(nk, "sandbox") == 0) {
        if (!json_is_string(e) || (strcmp(json_string_value(e), "strict") != 0 &&
                                   strcmp(json_string_value(e), "best-effort") != 0)) {
          kh__set_err(errmsg, "option '%s' must be \"strict\" or \"best-effort\"", k);
          rc = KH_EOPTION;
          goto fail;
        }
        json_object_set(o->all, "sandbox", e);
      } else {
        kh__set_err(errmsg, "unknown option '%s'", k);
        rc = KH_EOPTION;
        goto fail;
      }
    }
  }
  if (o->namespace_ == NULL) o->namespace_ = kh__strdup("default");
  json_object_set_new(o->all, "mode", json_string(kh__mode_name(o->mode)));
  json_object_set_new(o->all, "namespace", json_string(o->namespace_));

  if (o->host_thread && o->mode != KH__MODE_MAIN_THREAD) {
    kh__set_err(errmsg,
                "option 'thread' = \"host\" is supported in mode \"main_thread\" only "
                "(a worker runs its cells on its own main thread)");
    rc = KH_ENOTSUP;
    goto fail;
  }
  if (o->host_thread && o->max_execution_ms > 0) {
    /* The host thread is busy running the cell: no timer can fire to interrupt it. */
    kh__set_err(errmsg,
                "option 'maxExecutionTime' needs a kernel thread: it is not supported "
                "with option 'thread' = \"host\"");
    rc = KH_ENOTSUP;
    goto fail;
  }
  if (o->mode == KH__MODE_MAIN_THREAD) {
    static const char *const worker_only[] = {"env",         "cwd",     "permissions", "limits",
                                              "autoRestart", "sandbox", NULL};
    const char *const *w;
    json_t *fs;
    for (w = worker_only; *w; w++) {
      if (json_object_get(o->all, *w) != NULL) {
        kh__set_err(errmsg,
                    "option '%s' is not supported in mode \"main_thread\" (kernels "
                    "share the host process); use mode \"worker\"",
                    *w);
        rc = KH_ENOTSUP;
        goto fail;
      }
    }
    fs = json_object_get(o->all, "filesystem");
    if (fs != NULL) {
      json_t *root_v = json_object_get(fs, "root");
      json_t *mp = json_object_get(fs, "mountPoint");
      if (mp != NULL &&
          (root_v == NULL || strcmp(json_string_value(mp), json_string_value(root_v)) != 0)) {
        kh__set_err(errmsg,
                    "option 'filesystem.mountPoint' must equal 'filesystem.root' in "
                    "mode \"main_thread\" (no private mounts in the host process); use mode "
                    "\"worker\"");
        rc = KH_ENOTSUP;
        goto fail;
      }
      if (json_is_true(json_object_get(fs, "readOnly"))) {
        kh__set_err(errmsg,
                    "option 'filesystem.readOnly' is not supported in mode "
                    "\"main_thread\"; use mode \"worker\"");
        rc = KH_ENOTSUP;
        goto fail;
      }
    }
  }
  json_decref(root);
  return 0;

fail:
  json_decref(root);
  kh__kernel_opts_free(o);
  return rc;
}

void kh__kernel_opts_free(kh__kernel_opts_t *o) {
  free(o->namespace_);
  o->namespace_ = NULL;
  json_decref(o->all);
  o->all = NULL;
}

int kh__manager_opts_parse(kh__manager_opts_t *o, const char *text, char *errmsg) {
  json_t *root = NULL, *e;
  json_error_t jerr;
  const char *k;
  char nk[64];
  uint64_t u;
  int rc = 0;

  memset(o, 0, sizeof(*o));
  o->max_code_bytes = 4u << 20;
  o->interrupt_grace_ms = 3000;
  if (text == NULL || !*text) return 0;
  root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL || !json_is_object(root)) {
    kh__set_err(errmsg, "manager options must be a JSON object%s%s", root ? "" : ": ",
                root ? "" : jerr.text);
    rc = KH_EOPTION;
    goto fail;
  }
  json_object_foreach(root, k, e) {
    if (json_is_null(e)) continue;
    norm_key(k, nk, sizeof(nk));
    if (strcmp(nk, "maxcodebytes") == 0) {
      if ((rc = get_uint(e, k, &u, errmsg))) goto fail;
      o->max_code_bytes = (size_t)u;
    } else if (strcmp(nk, "interruptgracems") == 0) {
      if ((rc = get_uint(e, k, &o->interrupt_grace_ms, errmsg))) goto fail;
    } else if (strcmp(nk, "workerpath") == 0) {
      if ((rc = check_string(e, k, 4096, errmsg))) goto fail;
      o->worker_path = kh__strdup(json_string_value(e));
    } else if (strcmp(nk, "pool") == 0) {
      json_t *size;
      if (!json_is_object(e)) {
        kh__set_err(errmsg, "option '%s' must be an object like {\"size\": 2}", k);
        rc = KH_EOPTION;
        goto fail;
      }
      size = json_object_get(e, "size");
      if (size != NULL) {
        if ((rc = get_uint(size, "pool.size", &u, errmsg))) goto fail;
        if (u > 64) {
          kh__set_err(errmsg, "option 'pool.size' must be at most 64");
          rc = KH_EOPTION;
          goto fail;
        }
        o->pool_size = (int)u;
      }
    } else {
      kh__set_err(errmsg, "unknown manager option '%s'", k);
      rc = KH_EOPTION;
      goto fail;
    }
  }
  json_decref(root);
  return 0;
fail:
  json_decref(root);
  kh__manager_opts_free(o);
  return rc;
}

void kh__manager_opts_free(kh__manager_opts_t *o) {
  free(o->worker_path);
  o->worker_path = NULL;
}
