/* options.c: kernel and manager options, parsed from JSON by one table of option specs each.
 * Thread: loop (kh_kernel_create, kh_manager_new); tests/security's runner calls it too.
 *
 * A spec names an option in snake_case and camelCase (the caller may use either: Lua and C
 * write snake_case, JavaScript camelCase), gives its type and range, the modes that honour it,
 * a nested table for an object option, and the checks its type cannot express. Parsing makes
 * two passes over the caller's object:
 *   1. validate: every key known, every value of its type and in range, each check passed;
 *      typed fields are filled and the normalised object (snake_case keys, integers as
 *      integers) is built. Failures are KH_EOPTION.
 *   2. honour: with every value known good and the mode known, whether the mode can do what
 *      is asked. Failures are KH_ENOTSUP, naming the option and the mode that supports it.
 * A bad value thus always wins over an unsupported one, whatever the keys' order, and messages
 * name each option by its path as the caller spelled it ("limits.memoryBytes"). JSON null
 * stands for an option not given (JS undefined, Lua nil); an unknown name fails all the same. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum {
  OPT_BOOL,    /* true or false */
  OPT_UINT,    /* an integer from 0 to max (an integral JSON real counts: 1e6) */
  OPT_STRING,  /* 1 to max characters, no NUL */
  OPT_CHOICE,  /* one of choices[] */
  OPT_CHOICES, /* an array of choices[], each any number of times */
  OPT_PATHS,   /* an array of absolute paths */
  OPT_GRANT,   /* true, false, or an array of strings: a Deno-style permission */
  OPT_ENV,     /* an object of strings: environment variables to set */
  OPT_STRINGS, /* an array of strings (the check says more) */
  OPT_OBJECT   /* an object whose keys are the nested table sub[] */
} opt_type_t;

/* Where a valid value is kept besides the normalised object: a field at `off` of the struct
 * being filled (kh__kernel_opts_t or kh__manager_opts_t). */
typedef enum {
  TO_NONE,
  TO_U64,  /* uint64_t: OPT_UINT */
  TO_SIZE, /* size_t: OPT_UINT */
  TO_INT,  /* int: OPT_BOOL (0/1), OPT_UINT within int, OPT_CHOICE (the index in choices) */
  TO_STR,  /* char *, owned copy: OPT_STRING */
  TO_CSTR, /* const char *, borrowed from the normalised object: OPT_STRING */
  TO_JSON  /* json_t *, borrowed from the normalised object */
} opt_store_t;

/* Modes that honour an option: bit (1 << kh__mode_t). */
#define M_WORKER (1u << KH__MODE_WORKER)
#define M_MAIN (1u << KH__MODE_MAIN_THREAD)
#define M_ANY (M_WORKER | M_MAIN)
#define M_REMOTE (1u << KH__MODE_REMOTE)
#define M_ALL (M_ANY | M_REMOTE)

typedef struct parse_s parse_t;
typedef struct opt_spec_s opt_spec_t;

struct opt_spec_s {
  const char *name;  /* snake_case: the key of the normalised object */
  const char *camel; /* camelCase, also accepted (the same as name for one word) */
  opt_type_t type;
  uint64_t max;               /* OPT_UINT: largest value; OPT_STRING: longest length */
  const char *const *choices; /* OPT_CHOICE: NULL-terminated */
  const opt_spec_t *sub;      /* OPT_OBJECT: the nested table, ended by a NULL name */
  unsigned modes;             /* M_*: the modes that accept it at all */
  opt_store_t store;
  size_t off;
  /* Pass 1, after the type check: what the type cannot say. 0 or KH_EOPTION. */
  int (*check)(parse_t *p, const json_t *v, const char *path);
  /* Pass 2, for a mode in `modes`: whether this value can be honoured there. v is the
   * normalised value, parent the normalised object it sits in. 0 or KH_ENOTSUP. */
  int (*honour)(parse_t *p, const json_t *v, const json_t *parent, const char *path);
  int hidden; /* kept out of the normalised object (id: the kernel's info shows it anyway) */
  int empty_ok; /* OPT_STRING: "" is a value (a Jupyter key: no signing) */
};

struct parse_s {
  void *base;       /* the struct being filled */
  const char *what; /* "option" or "manager option", for messages */
  int mode;         /* kh__mode_t (set by pass 1's check_mode), or -1: manager, no pass 2 */
  char *errmsg;
  char got[64]; /* got()'s text */
};

#define PATH_MAX_LEN 256
#define U53 9007199254740992ULL /* 2^53: the largest integer a JavaScript number keeps exact */

const char *kh__mode_name(kh__mode_t mode) {
  return mode == KH__MODE_MAIN_THREAD ? "main_thread"
         : mode == KH__MODE_REMOTE    ? "remote"
                                      : "worker";
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

/* What a value was, for "got ..." in messages: a string (quoted, cut short), a number, or the
 * kind of value. Valid until the next call. */
static const char *got(parse_t *p, const json_t *v) {
  if (json_is_string(v))
    snprintf(p->got, sizeof(p->got), "\"%.40s\"", json_string_value(v));
  else if (json_is_integer(v))
    snprintf(p->got, sizeof(p->got), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
  else if (json_is_real(v))
    snprintf(p->got, sizeof(p->got), "%g", json_real_value(v));
  else
    return json_type_name(v);
  return p->got;
}

/* Sets the message and returns code: KH_EOPTION for a bad value, KH_ENOTSUP for one the mode
 * cannot honour. */
static int fail(parse_t *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parse_t *p, int code, const char *fmt, ...) {
  va_list ap;
  if (p->errmsg != NULL) {
    va_start(ap, fmt);
    vsnprintf(p->errmsg, KH__ERRMSG_MAX, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* --- the "host:port" grammar of permissions.net (also read by sandbox-plan.c) ------------- */

int kh__net_grant_parse(const char *s, char *host, size_t hn, int *port) {
  const char *colon = NULL, *end;
  char *ep;
  long v;
  *port = 0;
  if (*s == '[') {
    end = strchr(s, ']');
    if (end == NULL || end == s + 1) return -1;
    snprintf(host, hn, "%.*s", (int)(end - s - 1), s + 1);
    if (end[1] == '\0') return 0;
    if (end[1] != ':') return -1;
    colon = end + 1;
  } else {
    colon = strrchr(s, ':');
    /* Two colons or more: a bare IPv6 address, which cannot carry a port without brackets. */
    if (colon != NULL && strchr(s, ':') != colon) colon = NULL;
    snprintf(host, hn, "%.*s", (int)(colon ? (size_t)(colon - s) : strlen(s)), s);
    if (colon == NULL) return host[0] ? 0 : -1;
    if (host[0] == '\0') return -1;
  }
  if (colon[1] == '\0') return -1;
  errno = 0;
  v = strtol(colon + 1, &ep, 10);
  if (errno || *ep || v < 1 || v > 65535) return -1;
  *port = (int)v;
  return 0;
}

/* --- per-option checks (pass 1) ----------------------------------------------------------- */

static int check_id(parse_t *p, const json_t *v, const char *path) {
  const char *s;
  kh__kernel_opts_t *o = p->base;
  /* A small alphabet keeps ids safe wherever a host puts them (paths, URLs, logs) unquoted. */
  for (s = json_string_value(v); *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("._:-", *s))
      return fail(p, KH_EOPTION, "option '%s' may hold only letters, digits and . _ : -", path);
  snprintf(o->id, sizeof(o->id), "%s", json_string_value(v));
  return 0;
}

static int check_mode(parse_t *p, const json_t *v, const char *path) {
  kh__kernel_opts_t *o = p->base;
  (void)path;
  const char *s = json_string_value(v);
  o->mode = strcmp(s, "main_thread") == 0 ? KH__MODE_MAIN_THREAD
            : strcmp(s, "remote") == 0    ? KH__MODE_REMOTE
                                          : KH__MODE_WORKER;
  p->mode = (int)o->mode; /* what pass 2 judges the other options by */
  return 0;
}

static int check_abs(parse_t *p, const json_t *v, const char *path) {
  if (json_string_value(v)[0] != '/')
    return fail(p, KH_EOPTION, "option '%s' must be an absolute path", path);
  return 0;
}

static int check_mount_point(parse_t *p, const json_t *v, const char *path) {
  if (check_abs(p, v, path) != 0) return KH_EOPTION;
  /* Over "/" the bind mount would hide the whole system, the runtime included. */
  if (strcmp(json_string_value(v), "/") == 0)
    return fail(p, KH_EOPTION, "option '%s' must not be \"/\"", path);
  return 0;
}

/* Caught here rather than when the sandbox is planned, so that the message names the entry
 * by the caller's path, and a bad value is reported before any question of mode. */
static int check_net(parse_t *p, const json_t *v, const char *path) {
  size_t i;
  json_t *e;
  char host[256];
  int port;
  json_array_foreach(v, i, e) {
    if (kh__net_grant_parse(json_string_value(e), host, sizeof(host), &port) != 0)
      return fail(p, KH_EOPTION,
                  "option '%s[%zu]' must be \"host\", \"host:port\" or \"[ipv6]:port\" with a "
                  "port from 1 to 65535, got \"%s\"",
                  path, i, json_string_value(e));
  }
  return 0;
}

/* A kernel id as Jupyter Server makes them (a UUID) or any id a gateway could: it goes into
 * URL paths, so only characters that need no escaping there. */
static int check_remote_id(parse_t *p, const json_t *v, const char *path) {
  const char *s;
  for (s = json_string_value(v); *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
      return fail(p, KH_EOPTION, "option '%s' may hold only letters, digits and . _ -", path);
  return 0;
}

static int check_gateway_url(parse_t *p, const json_t *v, const char *path) {
  const char *s = json_string_value(v);
  size_t i;
  if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
    return fail(p, KH_EOPTION, "manager option '%s' must start with http:// or https://, got %s",
                path, got(p, v));
  for (i = 0; s[i]; i++)
    if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f || s[i] == '?' || s[i] == '#')
      return fail(p, KH_EOPTION,
                  "manager option '%s' must be a URL without spaces, controls, query or fragment",
                  path);
  return 0;
}

/* A header's value: no CR, LF or other control (a header injected into the request). */
static int check_value_chars(parse_t *p, const char *s, const char *path) {
  for (; *s; s++)
    if (((unsigned char)*s < ' ' && *s != '\t') || *s == 0x7f)
      return fail(p, KH_EOPTION, "manager option '%s' must not hold control characters", path);
  return 0;
}

static int check_header_value(parse_t *p, const json_t *v, const char *path) {
  return check_value_chars(p, json_string_value(v), path);
}

static int check_headers(parse_t *p, const json_t *v, const char *path) {
  const char *name, *c;
  json_t *val;
  char sub[PATH_MAX_LEN];
  json_object_foreach((json_t *)v, name, val) {
    snprintf(sub, sizeof(sub), "%s.%s", path, name);
    for (c = name; *c; c++)
      if (!isalnum((unsigned char)*c) && !strchr("!#$%&'*+-.^_`|~", *c))
        return fail(p, KH_EOPTION, "manager option '%s' is not an HTTP header name", sub);
    if (check_value_chars(p, json_string_value(val), sub) != 0) return KH_EOPTION;
  }
  return 0;
}

/* --- what a mode can honour (pass 2) ------------------------------------------------------ */

/* The mode(s) a set of M_* bits names, for "use mode ..." */
static const char *supporting_mode(unsigned modes) {
  return kh__mode_name((modes & M_WORKER) ? KH__MODE_WORKER
                       : (modes & M_MAIN) ? KH__MODE_MAIN_THREAD
                                          : KH__MODE_REMOTE);
}

/* The standard refusal: the option, the mode that cannot honour it, and one that can. */
static int not_in_mode(parse_t *p, const char *path, unsigned modes) {
  if (p->mode == KH__MODE_REMOTE)
    return fail(p, KH_ENOTSUP,
                "option '%s' cannot be enforced from here in mode \"remote\" (the gateway's "
                "kernelspec decides what its kernels may do); use mode \"%s\" for a local kernel",
                path, supporting_mode(modes));
  return fail(p, KH_ENOTSUP, "option '%s' is not supported in mode \"%s\"%s; use mode \"%s\"", path,
              kh__mode_name(p->mode),
              p->mode == KH__MODE_MAIN_THREAD ? " (kernels share the host process)" : "",
              supporting_mode(modes));
}

/* main_thread kernels live in the host process: no private mounts there. */
static int honour_mount_point(parse_t *p, const json_t *v, const json_t *fs, const char *path) {
  const char *root = json_string_value(json_object_get(fs, "root"));
  if (p->mode == KH__MODE_MAIN_THREAD && (root == NULL || strcmp(json_string_value(v), root)))
    return fail(p, KH_ENOTSUP,
                "option '%s' must equal 'filesystem.root' in mode \"main_thread\" (no "
                "private mounts in the host process); use mode \"worker\"",
                path);
  return 0;
}

/* Read-only needs a bind mount too (of root over itself). */
static int honour_read_only(parse_t *p, const json_t *v, const json_t *fs, const char *path) {
  (void)fs;
  if (p->mode == KH__MODE_MAIN_THREAD && json_is_true(v)) return not_in_mode(p, path, M_WORKER);
  return 0;
}

static int honour_thread(parse_t *p, const json_t *v, const json_t *all, const char *path) {
  (void)all;
  if (p->mode != KH__MODE_MAIN_THREAD && strcmp(json_string_value(v), "host") == 0)
    return fail(p, KH_ENOTSUP,
                "option '%s' = \"host\" is supported in mode \"main_thread\" only (a "
                "worker runs its cells on its own main thread)",
                path);
  return 0;
}

static int honour_max_execution(parse_t *p, const json_t *v, const json_t *all, const char *path) {
  const char *t = json_string_value(json_object_get(all, "thread"));
  /* The host thread is busy running the cell: no timer can fire to interrupt it. */
  if (json_integer_value(v) > 0 && t != NULL && strcmp(t, "host") == 0)
    return fail(p, KH_ENOTSUP,
                "option '%s' needs a kernel thread: it is not supported with option "
                "'thread' = \"host\"",
                path);
  return 0;
}

/* --- the tables --------------------------------------------------------------------------- */

/* One row per option; nested tables end with a NULL name. To add an option, add its row (both
 * spellings, type, range, modes); when C code needs its value, add a typed field to the options
 * struct in internal.h and name it in .store/.off, so that no reader looks it up as JSON. A
 * check that needs another option's value belongs in .honour (pass 2), where every value is
 * known: pass 1 sees the keys in the caller's order. Worker-only options need no code at all:
 * `.modes = M_WORKER` makes main_thread refuse them with the standard message. */

#define K(f) offsetof(kh__kernel_opts_t, f)
#define MG(f) offsetof(kh__manager_opts_t, f)

static const char *const mode_choices[] = {"worker", "main_thread", "remote", NULL};
static const char *const thread_choices[] = {"kernel", "host", NULL};
static const char *const sandbox_choices[] = {"strict", "best-effort", NULL};
static const char *const binary_choices[] = {"bytes", "base64", NULL};
/* IPython's select_figure_formats' names ("png2x" is "retina", "jpg" "jpeg"); _kh_mpl.FORMATS
 * is the same list on the runtime's side. */
static const char *const figure_format_choices[] = {"png",  "png2x", "retina", "jpg",
                                                    "jpeg", "svg",   "pdf",    NULL};

/* filesystem: a directory of the host as the kernel's workspace (DESIGN.md §7). */
static const opt_spec_t filesystem_spec[] = {
    {"enabled", "enabled", OPT_BOOL, .modes = M_ALL},
    {"root", "root", OPT_STRING, 4096, .modes = M_ALL, .check = check_abs},
    {"mount_point", "mountPoint", OPT_STRING, 4096, .modes = M_ALL, .check = check_mount_point,
     .honour = honour_mount_point},
    {"read_only", "readOnly", OPT_BOOL, .modes = M_ALL, .honour = honour_read_only},
    {NULL}};

/* permissions: Deno's model; once given, anything not granted is denied. */
static const opt_spec_t permissions_spec[] = {
    {"read", "read", OPT_PATHS, .modes = M_WORKER | M_REMOTE},
    {"write", "write", OPT_PATHS, .modes = M_WORKER | M_REMOTE},
    {"net", "net", OPT_GRANT, .modes = M_WORKER | M_REMOTE, .check = check_net},
    {"env", "env", OPT_GRANT, .modes = M_WORKER | M_REMOTE},
    {"run", "run", OPT_BOOL, .modes = M_WORKER | M_REMOTE},
    {NULL}};

static const opt_spec_t limits_spec[] = {
    {"memory_bytes", "memoryBytes", OPT_UINT, U53, .modes = M_WORKER | M_REMOTE},
    {"cpu_seconds", "cpuSeconds", OPT_UINT, U53, .modes = M_WORKER | M_REMOTE},
    {"max_output_bytes", "maxOutputBytes", OPT_UINT, U53, .modes = M_WORKER | M_REMOTE, .store = TO_U64,
     .off = K(max_output_bytes)},
    {"max_processes", "maxProcesses", OPT_UINT, U53, .modes = M_WORKER | M_REMOTE},
    {NULL}};

static const opt_spec_t kernel_spec[] = {
    {"mode", "mode", OPT_CHOICE, .choices = mode_choices, .modes = M_ALL, .check = check_mode},
    {"id", "id", OPT_STRING, KH__ID_MAX - 1, .modes = M_ALL, .check = check_id, .hidden = 1},
    {"namespace", "namespace", OPT_STRING, 255, .modes = M_ALL, .store = TO_STR,
     .off = K(namespace_)},
    {"max_execution_time", "maxExecutionTime", OPT_UINT, U53, .modes = M_ALL, .store = TO_U64,
     .off = K(max_execution_ms), .honour = honour_max_execution},
    {"inactivity_timeout", "inactivityTimeout", OPT_UINT, U53, .modes = M_ALL, .store = TO_U64,
     .off = K(inactivity_ms)},
    /* remote: passed on to a kernelhost kernelspec, refused by any other (backend-remote.c) */
    {"filesystem", "filesystem", OPT_OBJECT, .sub = filesystem_spec, .modes = M_ALL},
    {"thread", "thread", OPT_CHOICE, .choices = thread_choices, .modes = M_ANY, .store = TO_INT,
     .off = K(host_thread), .honour = honour_thread},
    {"permissions", "permissions", OPT_OBJECT, .sub = permissions_spec,
     .modes = M_WORKER | M_REMOTE},
    {"limits", "limits", OPT_OBJECT, .sub = limits_spec, .modes = M_WORKER | M_REMOTE},
    /* remote: sent in the POST /api/kernels body, where Enterprise Gateway reads KERNEL_* */
    {"env", "env", OPT_ENV, .modes = M_WORKER | M_REMOTE, .store = TO_JSON, .off = K(env)},
    {"cwd", "cwd", OPT_STRING, 4096, .modes = M_WORKER | M_REMOTE, .store = TO_CSTR, .off = K(cwd)},
    {"auto_restart", "autoRestart", OPT_BOOL, .modes = M_WORKER, .store = TO_INT,
     .off = K(auto_restart)},
    {"sandbox", "sandbox", OPT_CHOICE, .choices = sandbox_choices, .modes = M_WORKER | M_REMOTE},
    /* The formats matplotlib figures are sent in (Jupyter's InlineBackend.figure_formats). */
    {"figure_formats", "figureFormats", OPT_CHOICES, .choices = figure_format_choices,
     .modes = M_ANY, .store = TO_JSON, .off = K(figure_formats)},
    /* How binary values (image/png, comm buffers, ...) reach the host: as bytes beside the
     * JSON (kh_buffer_t), or as base64 strings inside it, as Jupyter's messages carry them. */
    {"binary", "binary", OPT_CHOICE, .choices = binary_choices, .modes = M_ALL, .store = TO_INT,
     .off = K(binary_base64)},
    /* Where the kernel's history is appended and read back from (interact.c). */
    {"history_file", "historyFile", OPT_STRING, 4096, .modes = M_ALL},
    /* mode "remote" (backend-remote.c): the gateway's kernelspec, the running kernel to attach
     * to, and whether destroy shuts the remote kernel down. */
    {"kernel_name", "kernelName", OPT_STRING, 255, .modes = M_REMOTE, .store = TO_CSTR,
     .off = K(kernel_name)},
    {"remote_id", "remoteId", OPT_STRING, 255, .modes = M_REMOTE, .store = TO_CSTR,
     .off = K(remote_id), .check = check_remote_id},
    {"shutdown", "shutdown", OPT_BOOL, .modes = M_REMOTE, .store = TO_INT, .off = K(shutdown)},
    {NULL}};

/* pool.preload: Python module names ("numpy", "matplotlib.pyplot"), each imported by the fork
 * server before it forks. Names only: the template runs them as `import NAME`, never code. */
static int check_modules(parse_t *p, const json_t *v, const char *path) {
  size_t i, j;
  json_t *e;
  if (json_array_size(v) > 64)
    return fail(p, KH_EOPTION, "option '%s' names more than 64 modules", path);
  json_array_foreach(v, i, e) {
    const char *s = json_string_value(e);
    size_t n = json_string_length(e);
    int ok = n > 0 && n <= 255;
    for (j = 0; ok && j < n; j++) {
      unsigned char c = (unsigned char)s[j];
      int start = j == 0 || s[j - 1] == '.';
      if (c == '.')
        ok = !start && j + 1 < n;
      else
        ok = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (!start && c >= '0' && c <= '9');
    }
    if (!ok)
      return fail(p, KH_EOPTION,
                  "option '%s[%zu]' must be a module name such as \"numpy\" or "
                  "\"matplotlib.pyplot\", got %s",
                  path, i, got(p, e));
  }
  return 0;
}

static const char *const pool_mode_choices[] = {"spawn", "fork", NULL};

static const opt_spec_t pool_spec[] = {
    /* Each warm worker is a whole process with its own CPython: the cap keeps a typo from
     * forking hundreds of them. With mode "fork", the forked workers kept waiting. */
    {"size", "size", OPT_UINT, 64, .store = TO_INT, .off = MG(pool_size)},
    /* "spawn": workers spawned ahead of need; "fork": one template that forks them. */
    {"mode", "mode", OPT_CHOICE, .choices = pool_mode_choices, .store = TO_INT,
     .off = MG(pool_fork)},
    {"preload", "preload", OPT_STRINGS, .check = check_modules, .store = TO_JSON,
     .off = MG(pool_preload)},
    {NULL}};

/* gateway: where mode "remote" kernels run (backend-remote.c). */
static const opt_spec_t gateway_spec[] = {
    {"url", "url", OPT_STRING, 2048, .check = check_gateway_url},
    {"token", "token", OPT_STRING, 4096, .empty_ok = 1, .check = check_header_value},
    {"headers", "headers", OPT_ENV, .check = check_headers},
    {"validate_cert", "validateCert", OPT_BOOL},
    {"kernel_name", "kernelName", OPT_STRING, 255},
    {"connect_timeout", "connectTimeout", OPT_UINT, U53},
    {"request_timeout", "requestTimeout", OPT_UINT, U53},
    {"reconnect_timeout", "reconnectTimeout", OPT_UINT, U53},
    {"poll_interval", "pollInterval", OPT_UINT, U53},
    {NULL}};

/* A manager serves every mode: its options have no `modes` and skip pass 2. */
static const opt_spec_t manager_spec[] = {
    {"max_code_bytes", "maxCodeBytes", OPT_UINT, U53, .store = TO_SIZE, .off = MG(max_code_bytes)},
    {"interrupt_grace_ms", "interruptGraceMs", OPT_UINT, U53, .store = TO_U64,
     .off = MG(interrupt_grace_ms)},
    {"worker_path", "workerPath", OPT_STRING, 4096, .store = TO_STR, .off = MG(worker_path)},
    {"pool", "pool", OPT_OBJECT, .sub = pool_spec},
    {"gateway", "gateway", OPT_OBJECT, .sub = gateway_spec},
    {NULL}};

/* kh_jupyter_serve's options (jupyter.c). The connection's keys are those of Jupyter's
 * connection files, which are snake_case; the camelCase spellings are accepted as everywhere. */
static const char *const transport_choices[] = {"tcp", "ipc", NULL};
static const char *const scheme_choices[] = {"hmac-sha256", NULL};
static const char *const shutdown_choices[] = {"stop", "destroy", "none", NULL};

static const opt_spec_t connection_spec[] = {
    {"transport", "transport", OPT_CHOICE, .choices = transport_choices},
    {"ip", "ip", OPT_STRING, 255},
    {"shell_port", "shellPort", OPT_UINT, 65535},
    {"iopub_port", "iopubPort", OPT_UINT, 65535},
    {"stdin_port", "stdinPort", OPT_UINT, 65535},
    {"control_port", "controlPort", OPT_UINT, 65535},
    {"hb_port", "hbPort", OPT_UINT, 65535},
    {"key", "key", OPT_STRING, 1024, .empty_ok = 1},
    {"signature_scheme", "signatureScheme", OPT_CHOICE, .choices = scheme_choices},
    /* jupyter_client writes "" when it started no named kernelspec */
    {"kernel_name", "kernelName", OPT_STRING, 255, .empty_ok = 1},
    {NULL}};

static const opt_spec_t jupyter_spec[] = {
    {"connection", "connection", OPT_OBJECT, .sub = connection_spec},
    {"connection_file", "connectionFile", OPT_STRING, 4096},
    {"ip", "ip", OPT_STRING, 255},
    {"transport", "transport", OPT_CHOICE, .choices = transport_choices},
    {"key", "key", OPT_STRING, 1024, .empty_ok = 1},
    {"kernel_name", "kernelName", OPT_STRING, 255},
    {"shutdown", "shutdown", OPT_CHOICE, .choices = shutdown_choices, .store = TO_INT,
     .off = offsetof(kh__jupyter_opts_t, shutdown)},
    {NULL}};

/* --- the walker --------------------------------------------------------------------------- */

/* Exact names only: "maxExecutionTime" or "max_execution_time", never "MAXEXECUTIONTIME", so
 * that the header's promise (camelCase or snake_case) is the whole rule. Tables are a dozen
 * rows: a linear scan costs less than building anything faster. */
static const opt_spec_t *find_spec(const opt_spec_t *table, const char *key) {
  for (; table->name != NULL; table++)
    if (strcmp(key, table->name) == 0 || strcmp(key, table->camel) == 0) return table;
  return NULL;
}

/* "limits" + "memoryBytes" -> "limits.memoryBytes": paths as the caller spelled each key. A
 * key too long for the buffer is cut; the message still says which option it was. */
static void join_path(char *out, const char *prefix, const char *key) {
  if (prefix == NULL)
    snprintf(out, PATH_MAX_LEN, "%s", key);
  else
    snprintf(out, PATH_MAX_LEN, "%s.%s", prefix, key);
}

static int check_string(parse_t *p, const json_t *v, const char *path, size_t max,
                        int empty_ok) {
  if (!json_is_string(v))
    return fail(p, KH_EOPTION, "option '%s' must be a string, got %s", path, got(p, v));
  if (empty_ok && json_string_length(v) == 0) return 0;
  if (empty_ok && json_string_length(v) > max)
    return fail(p, KH_EOPTION, "option '%s' must be at most %zu characters long", path, max);
  if (json_string_length(v) == 0 || json_string_length(v) > max)
    return fail(p, KH_EOPTION, "option '%s' must be 1 to %zu characters long", path, max);
  /* Strings go on into C APIs (paths, setenv): an embedded NUL would cut them silently. */
  if (strlen(json_string_value(v)) != json_string_length(v))
    return fail(p, KH_EOPTION, "option '%s' must not contain NUL", path);
  return 0;
}

static int check_strings(parse_t *p, const json_t *v, const char *path, int absolute) {
  size_t i;
  json_t *e;
  if (!json_is_array(v))
    return fail(p, KH_EOPTION, "option '%s' must be an array of strings, got %s", path, got(p, v));
  json_array_foreach(v, i, e) {
    if (!json_is_string(e))
      return fail(p, KH_EOPTION, "option '%s[%zu]' must be a string, got %s", path, i, got(p, e));
    if (absolute && json_string_value(e)[0] != '/')
      return fail(p, KH_EOPTION, "option '%s[%zu]' must be an absolute path, got \"%s\"", path, i,
                  json_string_value(e));
  }
  return 0;
}

/* A JSON integer, or a real with no fraction, from 0 to max. JSON has one number type, and a
 * Lua float such as 1e9 arrives as a real. */
static int get_uint(parse_t *p, const json_t *v, const char *path, uint64_t max, uint64_t *out) {
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *out = (uint64_t)json_integer_value(v);
  } else if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) <= (double)U53 &&
             floor(json_real_value(v)) == json_real_value(v)) {
    *out = (uint64_t)json_real_value(v);
  } else {
    return fail(p, KH_EOPTION, "option '%s' must be a non-negative integer, got %s", path,
                got(p, v));
  }
  if (*out > max)
    return fail(p, KH_EOPTION, "option '%s' must be at most %llu", path, (unsigned long long)max);
  return 0;
}

static int check_choice(parse_t *p, const opt_spec_t *s, const json_t *v, const char *path,
                        int *index) {
  char list[200] = "";
  size_t n = 0;
  int i;
  for (i = 0; json_is_string(v) && s->choices[i] != NULL; i++)
    if (strcmp(json_string_value(v), s->choices[i]) == 0) {
      *index = i;
      return 0;
    }
  /* '"a", "b" or "c"' from the table itself, so the message can never fall behind it. */
  for (i = 0; s->choices[i] != NULL && n < sizeof(list); i++)
    n += (size_t)snprintf(list + n, sizeof(list) - n, "%s\"%s\"",
                          i == 0              ? ""
                          : s->choices[i + 1] ? ", "
                                              : " or ",
                          s->choices[i]);
  return fail(p, KH_EOPTION, "option '%s' must be %s, got %s", path, list, got(p, v));
}

/* Each element is checked as an OPT_CHOICE is, and named by its index in messages. */
static int check_choices(parse_t *p, const opt_spec_t *s, const json_t *v, const char *path) {
  char epath[PATH_MAX_LEN + 24]; /* path, "[", an index, "]" */
  size_t i;
  json_t *e;
  int index, rc;
  if ((rc = check_strings(p, v, path, 0)) != 0) return rc;
  json_array_foreach(v, i, e) {
    snprintf(epath, sizeof(epath), "%s[%zu]", path, i);
    if ((rc = check_choice(p, s, e, epath, &index)) != 0) return rc;
  }
  return 0;
}

static int check_env(parse_t *p, const json_t *v, const char *path) {
  const char *k;
  json_t *e;
  if (!json_is_object(v))
    return fail(p, KH_EOPTION, "option '%s' must be an object of strings, got %s", path, got(p, v));
  json_object_foreach((json_t *)v, k, e) {
    /* setenv() refuses an empty name or one with '=', and NUL would cut the value. */
    if (!json_is_string(e) || !*k || strchr(k, '=') ||
        strlen(json_string_value(e)) != json_string_length(e))
      return fail(p, KH_EOPTION,
                  "option '%s.%s' must be a string (and the name non-empty, without '=')", path, k);
  }
  return 0;
}

/* Puts a valid value into its typed field. TO_CSTR and TO_JSON point into the normalised
 * object, which lives exactly as long as the options struct (freed together in
 * kh__kernel_opts_free), so the borrow needs no reference of its own. */
static void store(parse_t *p, const opt_spec_t *s, const json_t *norm, uint64_t u, int index) {
  char *field = (char *)p->base + s->off;
  switch (s->store) {
    case TO_NONE:
      break;
    case TO_U64:
      *(uint64_t *)field = u;
      break;
    case TO_SIZE:
      *(size_t *)field = (size_t)u;
      break;
    case TO_INT:
      *(int *)field = s->type == OPT_BOOL     ? json_is_true(norm)
                      : s->type == OPT_CHOICE ? index
                                              : (int)u;
      break;
    case TO_STR:
      free(*(char **)field);
      *(char **)field = kh__strdup(json_string_value(norm));
      break;
    case TO_CSTR:
      *(const char **)field = json_string_value(norm);
      break;
    case TO_JSON:
      *(json_t **)field = (json_t *)norm;
      break;
  }
}

static int validate(parse_t *p, const opt_spec_t *table, const json_t *in, const char *prefix,
                    json_t *out);

/* Pass 1 for one value: its type, its range, its check; then its normalised form into out.
 * Every value is copied (or rebuilt, for numbers and objects): the caller's document is freed
 * when parsing ends, and the normalised object must not share anything with it. */
static int validate_one(parse_t *p, const opt_spec_t *s, const json_t *v, const char *path,
                        json_t *out) {
  json_t *norm = NULL;
  uint64_t u = 0;
  int index = 0, rc = 0;
  switch (s->type) {
    case OPT_BOOL:
      if (!json_is_boolean(v))
        return fail(p, KH_EOPTION, "option '%s' must be a boolean, got %s", path, got(p, v));
      break;
    case OPT_UINT:
      if ((rc = get_uint(p, v, path, s->max, &u)) != 0) return rc;
      norm = json_integer((json_int_t)u); /* 1e6 is kept as 1000000: readers want integers */
      break;
    case OPT_STRING:
      rc = check_string(p, v, path, (size_t)s->max, s->empty_ok);
      break;
    case OPT_CHOICE:
      rc = check_choice(p, s, v, path, &index);
      break;
    case OPT_CHOICES:
      rc = check_choices(p, s, v, path);
      break;
    case OPT_PATHS:
      rc = check_strings(p, v, path, 1);
      break;
    case OPT_STRINGS:
      rc = check_strings(p, v, path, 0);
      break;
    case OPT_GRANT:
      if (!json_is_boolean(v) && check_strings(p, v, path, 0) != 0)
        return fail(p, KH_EOPTION, "option '%s' must be a boolean or an array of strings", path);
      break;
    case OPT_ENV:
      rc = check_env(p, v, path);
      break;
    case OPT_OBJECT:
      if (!json_is_object(v))
        return fail(p, KH_EOPTION, "option '%s' must be an object, got %s", path, got(p, v));
      norm = json_object();
      if ((rc = validate(p, s->sub, v, path, norm)) != 0) {
        json_decref(norm);
        return rc;
      }
      break;
  }
  /* A grant's check (permissions.net's syntax) applies to its array form only. */
  if (rc == 0 && s->check != NULL && !(s->type == OPT_GRANT && json_is_boolean(v)))
    rc = s->check(p, v, path);
  if (rc != 0) {
    json_decref(norm);
    return rc;
  }
  if (norm == NULL) norm = json_deep_copy(v);
  if (norm == NULL) return fail(p, KH_ENOMEM, "out of memory while parsing option '%s'", path);
  store(p, s, norm, u, index);
  if (s->hidden)
    json_decref(norm);
  else
    json_object_set_new(out, s->name, norm);
  return 0;
}

/* Pass 1 over one object: unknown keys, values, and one spelling of each option. */
static int validate(parse_t *p, const opt_spec_t *table, const json_t *in, const char *prefix,
                    json_t *out) {
  const char *k;
  json_t *v;
  char path[PATH_MAX_LEN];
  json_object_foreach((json_t *)in, k, v) {
    const opt_spec_t *s = find_spec(table, k);
    int rc;
    join_path(path, prefix, k);
    /* Unknown before null: {"colour": null} is still a typo worth reporting. */
    if (s == NULL) return fail(p, KH_EOPTION, "unknown %s '%s'", p->what, path);
    if (json_is_null(v)) continue;
    /* Both spellings of one option in one object: which one was meant is anyone's guess. */
    if (json_object_get(out, s->name) != NULL)
      return fail(p, KH_EOPTION, "option '%s' is given twice (as '%s' and '%s')", path, s->name,
                  s->camel);
    if ((rc = validate_one(p, s, v, path, out)) != 0) return rc;
  }
  return 0;
}

/* Pass 2 over one object (in: the caller's, norm: its normalised form). It walks the caller's
 * object again, not the normalised one, so that messages keep the caller's spelling. The mode
 * was fixed in pass 1 (check_mode), wherever "mode" stood among the keys. */
static int honour(parse_t *p, const opt_spec_t *table, const json_t *in, const char *prefix,
                  const json_t *norm) {
  const char *k;
  json_t *v;
  char path[PATH_MAX_LEN];
  json_object_foreach((json_t *)in, k, v) {
    const opt_spec_t *s = find_spec(table, k);
    const json_t *nv = json_object_get(norm, s->name);
    int rc;
    if (json_is_null(v)) continue;
    join_path(path, prefix, k);
    if (!(s->modes & (1u << p->mode))) return not_in_mode(p, path, s->modes);
    if (s->honour != NULL && nv != NULL && (rc = s->honour(p, nv, norm, path)) != 0) return rc;
    if (s->type == OPT_OBJECT && (rc = honour(p, s->sub, v, path, nv)) != 0) return rc;
  }
  return 0;
}

/* Both kinds of options: the text is one JSON object (or NULL/empty: all defaults). */
static int parse(parse_t *p, const opt_spec_t *table, const char *text, const char *kind,
                 json_t *all) {
  json_error_t jerr;
  json_t *root;
  int rc;
  if (text == NULL || *text == '\0') return 0;
  /* Duplicate keys would let the last one win unseen. */
  root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL)
    return fail(p, KH_EOPTION, "%s options are not valid JSON: %s", kind, jerr.text);
  if (!json_is_object(root)) {
    rc = fail(p, KH_EOPTION, "%s options must be an object, got %s", kind, got(p, root));
  } else {
    rc = validate(p, table, root, NULL, all);
    if (rc == 0 && p->mode >= 0) rc = honour(p, table, root, NULL, all);
  }
  json_decref(root);
  return rc;
}

int kh__kernel_opts_parse(kh__kernel_opts_t *o, const char *text, char *errmsg) {
  parse_t p = {o, "option", KH__MODE_WORKER, errmsg}; /* worker: the default mode */
  int rc;
  memset(o, 0, sizeof(*o));
  o->max_output_bytes = KH__NO_LIMIT; /* 0 is a real limit (no output at all), not "none" */
  o->shutdown = -1;
  o->all = json_object();
  if (o->all == NULL) return KH_ENOMEM;
  if ((rc = parse(&p, kernel_spec, text, "kernel", o->all)) != 0) {
    kh__kernel_opts_free(o);
    return rc;
  }
  if (o->namespace_ == NULL) o->namespace_ = kh__strdup("default");
  /* The kernel's info always shows its mode and namespace, defaults included. */
  json_object_set_new(o->all, "mode", json_string(kh__mode_name(o->mode)));
  json_object_set_new(o->all, "namespace", json_string(o->namespace_));
  return 0;
}

void kh__kernel_opts_free(kh__kernel_opts_t *o) {
  free(o->namespace_);
  o->namespace_ = NULL;
  json_decref(o->all);
  o->all = NULL;
  o->env = NULL;
  o->cwd = NULL;
  o->figure_formats = NULL;
  o->kernel_name = NULL;
  o->remote_id = NULL;
}

/* The gateway's keys that the environment may give (as jupyter's JUPYTER_GATEWAY_URL does);
 * an option given in the manager's options wins. */
static const struct {
  const char *var, *key;
  int json;
} gateway_env[] = {{"KERNELHOST_GATEWAY_URL", "url", 0},
                   {"KERNELHOST_GATEWAY_TOKEN", "token", 0},
                   {"KERNELHOST_GATEWAY_KERNEL_NAME", "kernel_name", 0},
                   {"KERNELHOST_GATEWAY_HEADERS", "headers", 1}};

/* Adds what the environment says to the caller's options (a copy as text in *out, or NULL when
 * the environment says nothing). The result is parsed like any options, so a bad variable is
 * reported as the option it stands for. */
static int gateway_from_env(const char *text, char **out, char *errmsg) {
  json_t *doc, *gw;
  size_t i;
  int any = 0;
  *out = NULL;
  for (i = 0; i < sizeof(gateway_env) / sizeof(gateway_env[0]); i++)
    if (getenv(gateway_env[i].var) != NULL) any = 1;
  if (!any) return 0;
  doc = (text == NULL || text[0] == 0) ? json_object() : json_loads(text, 0, NULL);
  if (!json_is_object(doc)) { /* the parse that follows reports it */
    json_decref(doc);
    return 0;
  }
  gw = json_object_get(doc, "gateway");
  if (gw == NULL || json_is_null(gw)) {
    gw = json_object();
    json_object_set_new(doc, "gateway", gw);
  }
  if (json_is_object(gw)) {
    for (i = 0; i < sizeof(gateway_env) / sizeof(gateway_env[0]); i++) {
      const char *val = getenv(gateway_env[i].var), *camel = gateway_env[i].key;
      json_t *jv;
      if (val == NULL || json_object_get(gw, gateway_env[i].key) != NULL) continue;
      if (strcmp(camel, "kernel_name") == 0 && json_object_get(gw, "kernelName") != NULL)
        continue;
      jv = gateway_env[i].json ? json_loads(val, 0, NULL) : json_string(val);
      if (jv == NULL) {
        snprintf(errmsg, KH__ERRMSG_MAX, "%s must be %s", gateway_env[i].var,
                 gateway_env[i].json ? "a JSON object" : "valid UTF-8");
        json_decref(doc);
        return KH_EOPTION;
      }
      json_object_set_new(gw, gateway_env[i].key, jv);
    }
  }
  *out = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  return *out == NULL ? KH_ENOMEM : 0;
}

int kh__manager_opts_parse(kh__manager_opts_t *o, const char *text, char *errmsg) {
  parse_t p = {o, "manager option", -1, errmsg};
  json_t *all = json_object();
  char *merged = NULL;
  int rc;
  memset(o, 0, sizeof(*o));
  o->max_code_bytes = 4u << 20;
  o->interrupt_grace_ms = 3000;
  if (all == NULL) return KH_ENOMEM;
  if ((rc = gateway_from_env(text, &merged, errmsg)) != 0) {
    json_decref(all);
    return rc;
  }
  rc = parse(&p, manager_spec, merged != NULL ? merged : text, "manager", all);
  free(merged);
  if (rc != 0) o->pool_preload = NULL; /* borrowed from `all` until kept below */
  if (rc == 0) {
    json_t *pool = json_object_get(all, "pool");
    if (o->pool_preload != NULL && !o->pool_fork) {
      o->pool_preload = NULL;
      rc = fail(&p, KH_EOPTION,
                "manager option 'pool.preload' needs 'pool.mode' \"fork\" (a spawned worker "
                "imports nothing ahead)");
    } else if (o->pool_fork) {
      /* Borrowed from `all` until now. Without a size, one forked worker waits. */
      o->pool_preload = o->pool_preload ? json_incref(o->pool_preload) : json_array();
      if (json_object_get(pool, "size") == NULL) o->pool_size = 1;
    } else {
      o->pool_preload = NULL;
    }
  }
  if (rc == 0) {
    json_t *gw = json_object_get(all, "gateway");
    if (gw != NULL && json_object_get(gw, "url") == NULL) {
      rc = fail(&p, KH_EOPTION,
                "manager option 'gateway.url' is required with 'gateway' (or set "
                "KERNELHOST_GATEWAY_URL)");
    } else if (gw != NULL) {
      o->gateway = json_incref(gw);
    }
  }
  json_decref(all); /* nothing shows a manager's options yet: the typed fields are all */
  if (rc != 0) kh__manager_opts_free(o);
  return rc;
}

void kh__manager_opts_free(kh__manager_opts_t *o) {
  free(o->worker_path);
  o->worker_path = NULL;
  json_decref(o->gateway);
  o->gateway = NULL;
  json_decref(o->pool_preload);
  o->pool_preload = NULL;
}

int kh__jupyter_opts_parse(kh__jupyter_opts_t *o, const char *text, char *errmsg) {
  parse_t p = {o, "Jupyter server option", -1, errmsg};
  int rc;
  memset(o, 0, sizeof(*o));
  if ((o->all = json_object()) == NULL) return KH_ENOMEM;
  rc = parse(&p, jupyter_spec, text, "Jupyter server", o->all);
  if (rc != 0) {
    json_decref(o->all);
    o->all = NULL;
  }
  return rc;
}
