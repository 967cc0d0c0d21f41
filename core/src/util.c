/* util.c: string buffers, ids, clocks, input checks and the reference counts of handle-owned
 * objects, used across the core. Thread: any, except the references (loop).
 *
 * The string buffer remembers an allocation failure instead of reporting each append: a reply
 * is built from dozens of pieces, and checking once at the end (kh__sb_take returns NULL) is
 * the only way that code stays readable and still never hands out a truncated JSON text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "internal.h"

void kh__sb_append(kh__strbuf_t *sb, const char *s, size_t n) {
  if (sb->oom) return;
  if (sb->len + n + 1 > sb->cap) {
    size_t cap = sb->cap ? sb->cap : 256;
    char *p;
    while (cap < sb->len + n + 1) cap *= 2;
    p = realloc(sb->buf, cap);
    if (p == NULL) {
      sb->oom = 1;
      return;
    }
    sb->buf = p;
    sb->cap = cap;
  }
  memcpy(sb->buf + sb->len, s, n);
  sb->len += n;
  sb->buf[sb->len] = '\0';
}

void kh__sb_puts(kh__strbuf_t *sb, const char *s) {
  kh__sb_append(sb, s, strlen(s));
}

char *kh__sb_take(kh__strbuf_t *sb) {
  char *p;
  if (sb->oom) {
    kh__sb_free(sb);
    return NULL;
  }
  if (sb->buf == NULL) kh__sb_append(sb, "", 0);
  p = sb->buf;
  sb->buf = NULL;
  sb->len = sb->cap = 0;
  return p;
}

void kh__sb_free(kh__strbuf_t *sb) {
  free(sb->buf);
  sb->buf = NULL;
  sb->len = sb->cap = 0;
  sb->oom = 0;
}

char *kh__strdup(const char *s) {
  return s ? kh__memdup(s, strlen(s) + 1) : NULL;
}

void *kh__memdup(const void *p, size_t n) {
  void *q = malloc(n ? n : 1);
  if (q != NULL && n) memcpy(q, p, n);
  return q;
}

/* Execution ids and kernel ids are UUID-4 strings, as Jupyter's msg_ids are: unique across
 * managers and processes, so an event can never be credited to another host's request. */
void kh__uuid(char *out) {
  unsigned char b[16];
  static const char hex[] = "0123456789abcdef";
  int i, j = 0;
  if (uv_random(NULL, NULL, b, sizeof(b), 0, NULL) != 0) {
    /* uv_random only fails without any entropy source; fall back to the clock. */
    uint64_t t = uv_hrtime();
    for (i = 0; i < 16; i++) b[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)(i * 37);
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  for (i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[j++] = '-';
    out[j++] = hex[b[i] >> 4];
    out[j++] = hex[b[i] & 15];
  }
  out[j] = '\0';
}

double kh__now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec * 1000.0 + (double)(tv.tv_usec / 1000);
}

void kh__set_err(char *buf, const char *fmt, ...) {
  va_list ap;
  if (buf == NULL) return;
  va_start(ap, fmt);
  vsnprintf(buf, KH__ERRMSG_MAX, fmt, ap);
  va_end(ap);
}

/* Code is checked on the host, before it is queued: a worker must never be the first to see
 * invalid UTF-8 (its frames would not encode), and a NUL byte would cut the cell short in
 * CPython's compile() without a word. */
int kh__check_code(const char *code, size_t len, size_t max, char *errmsg) {
  const char *nul;
  if (code == NULL) {
    kh__set_err(errmsg, "code must not be NULL");
    return KH_EINVAL;
  }
  if (len > max) {
    kh__set_err(errmsg,
                "code is %zu bytes, over the limit of %zu bytes (manager option "
                "maxCodeBytes)",
                len, max);
    return KH_ETOOBIG;
  }
  nul = memchr(code, '\0', len);
  if (nul != NULL) {
    kh__set_err(errmsg, "code contains a NUL byte at offset %zu", (size_t)(nul - code));
    return KH_EENCODING;
  }
  if (!kh__utf8_valid(code, len)) {
    kh__set_err(errmsg, "code is not valid UTF-8");
    return KH_EENCODING;
  }
  return 0;
}

int kh__utf8_valid(const char *s, size_t len) {
  /* jansson validates UTF-8 when it makes a string; that is the check we need. */
  json_t *j = json_stringn(s, len);
  json_decref(j);
  return j != NULL;
}

/* --- references --------------------------------------------------------------------------- */

void kh__refs_init(kh__refs_t *r, void (*release)(kh__refs_t *r)) {
  r->n = 0;
  r->release = release;
}

void kh__refs_get(kh__refs_t *r) {
  r->n++;
}

void kh__refs_put(kh__refs_t *r) {
  if (--r->n == 0) r->release(r);
}

static void on_refs_handle_closed(uv_handle_t *h) {
  kh__refs_put(h->data);
}

void kh__refs_close(kh__refs_t *r, uv_handle_t *h) {
  if (uv_is_closing(h)) return; /* closed already: its reference is on its way back */
  h->data = r;
  uv_close(h, on_refs_handle_closed);
}

/* --- binary values beside JSON ------------------------------------------------------------- */

kh__blob_t *kh__blob_new(const void *data, size_t len) {
  kh__blob_t *b;
  if (len > SIZE_MAX - sizeof(*b) - 1) return NULL;
  b = malloc(sizeof(*b) + len + 1);
  if (b == NULL) return NULL;
  atomic_init(&b->refs, 1);
  b->len = len;
  if (len) memcpy(b->data, data, len);
  b->data[len] = '\0';
  return b;
}

void kh__blob_ref(kh__blob_t *b) {
  atomic_fetch_add(&b->refs, 1);
}

void kh__blob_unref(kh__blob_t *b) {
  if (b != NULL && atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}

int kh__bufs_add(kh__bufs_t *bs, const char *prefix, const char *path, kh__blob_t *blob) {
  size_t pn = prefix ? strlen(prefix) : 0, n = strlen(path);
  char *p;
  if (bs->n == bs->cap) {
    size_t cap = bs->cap ? bs->cap * 2 : 4;
    kh__buf_t *v = realloc(bs->v, cap * sizeof(*v));
    if (v == NULL) return KH_ENOMEM;
    bs->v = v;
    bs->cap = cap;
  }
  if ((p = malloc(pn + n + 1)) == NULL) return KH_ENOMEM;
  if (pn) memcpy(p, prefix, pn);
  memcpy(p + pn, path, n + 1);
  kh__blob_ref(blob);
  bs->v[bs->n].path = p;
  bs->v[bs->n].blob = blob;
  bs->n++;
  return 0;
}

int kh__bufs_add_copy(kh__bufs_t *bs, const char *path, const void *data, size_t len) {
  kh__blob_t *b = kh__blob_new(data, len);
  int rc;
  if (b == NULL) return KH_ENOMEM;
  rc = kh__bufs_add(bs, NULL, path, b);
  kh__blob_unref(b);
  return rc;
}

void kh__bufs_free(kh__bufs_t *bs) {
  size_t i;
  if (bs == NULL) return;
  for (i = 0; i < bs->n; i++) {
    free(bs->v[i].path);
    kh__blob_unref(bs->v[i].blob);
  }
  free(bs->v);
  bs->v = NULL;
  bs->n = bs->cap = 0;
}

void kh__bufs_move(kh__bufs_t *dst, kh__bufs_t *src) {
  kh__bufs_free(dst);
  *dst = *src;
  src->v = NULL;
  src->n = src->cap = 0;
}

kh_buffer_t *kh__bufs_view(const kh__bufs_t *bs, size_t *n) {
  kh_buffer_t *v;
  size_t i;
  *n = 0;
  if (bs == NULL || bs->n == 0 || (v = malloc(bs->n * sizeof(*v))) == NULL) return NULL;
  for (i = 0; i < bs->n; i++) {
    v[i].path = bs->v[i].path;
    v[i].data = bs->v[i].blob->data;
    v[i].len = bs->v[i].blob->len;
  }
  *n = bs->n;
  return v;
}

/* RFC 6901: "/a~1b/0" names member "a/b", then element 0; "" is the whole document. */
json_t *kh__json_pointer(const json_t *doc, const char *path) {
  json_t *cur = (json_t *)doc;
  char key[512];
  if (path == NULL || (*path != '\0' && *path != '/')) return NULL;
  while (cur != NULL && *path == '/') {
    size_t n = 0;
    path++;
    while (*path && *path != '/') {
      char c = *path++;
      if (c == '~') {
        if (*path == '0')
          c = '~';
        else if (*path == '1')
          c = '/';
        else
          return NULL;
        path++;
      }
      if (n + 1 >= sizeof(key)) return NULL;
      key[n++] = c;
    }
    key[n] = '\0';
    if (json_is_object(cur)) {
      cur = json_object_get(cur, key);
    } else if (json_is_array(cur)) {
      char *end;
      unsigned long i;
      if (n == 0 || (n > 1 && key[0] == '0') || key[0] < '0' || key[0] > '9') return NULL;
      i = strtoul(key, &end, 10);
      if (*end != '\0') return NULL;
      cur = json_array_get(cur, (size_t)i);
    } else {
      return NULL;
    }
  }
  return cur;
}

int kh__bufs_check(const json_t *doc, const kh_buffer_t *b, size_t n, char *errmsg) {
  size_t i, j;
  if (n > 0 && b == NULL) {
    kh__set_err(errmsg, "%zu buffers given without an array", n);
    return KH_EINVAL;
  }
  for (i = 0; i < n; i++) {
    json_t *v;
    if (b[i].path == NULL || (b[i].data == NULL && b[i].len > 0)) {
      kh__set_err(errmsg, "buffer %zu has no path or no data", i);
      return KH_EINVAL;
    }
    /* "" is the document itself: a host function's answer may be bytes and nothing else (a
     * null document); an object or array document is no null, so "" cannot lead into it. */
    v = kh__json_pointer(doc, b[i].path);
    if (v == NULL || !json_is_null(v)) {
      kh__set_err(errmsg, "buffer path \"%s\" does not lead to a null in the JSON", b[i].path);
      return KH_EINVAL;
    }
    for (j = 0; j < i; j++) {
      if (strcmp(b[j].path, b[i].path) == 0) {
        kh__set_err(errmsg, "buffer path \"%s\" is given twice", b[i].path);
        return KH_EINVAL;
      }
    }
  }
  return 0;
}

int kh__utf8_seq(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  int len, i;
  unsigned lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4;
  else
    return -1;
  if (c == 0xE0)
    lo = 0xA0;
  else if (c == 0xED)
    hi = 0x9F; /* no surrogates */
  else if (c == 0xF0)
    lo = 0x90;
  else if (c == 0xF4)
    hi = 0x8F;
  for (i = 1; i < len; i++) {
    if ((size_t)i >= n) return 0;
    if (p[i] < lo || p[i] > hi) return -i;
    lo = 0x80;
    hi = 0xBF;
  }
  return len;
}
