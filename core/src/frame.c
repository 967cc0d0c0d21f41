/* frame.c: the worker protocol's framing: a 4-byte big-endian length, then that many bytes of
 * one JSON object with a string member "t" (the message type). The decoder takes arbitrary
 * bytes and either yields whole frames or a clear error; it is fuzzed (tests/fuzz/).
 *
 * Frames that carry a payload (events and replies: string members, then "data" last) are
 * decoded in two parts: the small header with jansson, the payload only validated, with yajl,
 * and handed on as the text it arrived as. jansson builds every string it parses: 16 ms for a
 * 1.4 MB base64 image here, against 0.8 ms for yajl to validate the same bytes (1.0 ms with the
 * byte check that yajl needs beside it, plain_text()).
 *
 * Used by the host (worker-proc.c), the worker (core/worker/main.c) and the fuzzer; which
 * messages a frame may carry is protocol.c's business. Thread: any, one user per decoder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "internal.h"

void kh__frame_dec_init(kh__frame_dec_t *d, size_t max) {
  memset(d, 0, sizeof(*d));
  d->max = max ? max : KH__FRAME_MAX;
}

void kh__frame_dec_free(kh__frame_dec_t *d) {
  json_decref(d->pending);
  d->pending = NULL;
  free(d->buf);
  d->buf = NULL;
  d->len = d->pos = d->cap = 0;
}

/* A failed decoder stays failed: after a bad frame nothing that follows can be trusted to start
 * on a frame boundary, so there is no resynchronising. */
static int fail(kh__frame_dec_t *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->err, sizeof(d->err), fmt, ap);
  va_end(ap);
  d->failed = 1;
  return KH_EPROTO;
}

static size_t frame_len(const unsigned char *p) {
  return ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | (size_t)p[3];
}

int kh__frame_dec_feed(kh__frame_dec_t *d, const void *p, size_t n) {
  if (d->failed) return KH_EPROTO;
  if (n == 0) return 0;
  if (d->pos > 0 && (d->pos == d->len || d->len + n > d->cap)) {
    /* Drop consumed bytes before growing, so the buffer stays within one frame's size. */
    memmove(d->buf, d->buf + d->pos, d->len - d->pos);
    d->len -= d->pos;
    d->pos = 0;
  }
  if (d->len + n > d->cap) {
    size_t cap = d->cap ? d->cap : 4096;
    char *nb;
    while (cap < d->len + n) cap *= 2;
    nb = realloc(d->buf, cap);
    if (nb == NULL) return fail(d, "out of memory buffering a frame");
    d->buf = nb;
    d->cap = cap;
  }
  memcpy(d->buf + d->len, p, n);
  d->len += n;
  return 0;
}

/* yajl tracks the nesting for valid_object(): `closed` is set when the top level closes. */
typedef struct {
  size_t depth;
  int closed;
} vstate_t;

/* Deeper than jansson goes (JSON_PARSER_MAX_DEPTH) is refused as jansson refuses it, so both
 * paths agree. A worker's own runtime never sends such a frame: its emit() refuses payloads
 * nested near that depth (py-module.c), which a cell can make after sys.setrecursionlimit. */
static int v_open(void *ctx) {
  return ++((vstate_t *)ctx)->depth <= JSON_PARSER_MAX_DEPTH;
}

static int v_close(void *ctx) {
  vstate_t *v = ctx;
  if (--v->depth == 0) v->closed = 1;
  return 1;
}

/* Whether p[0..n) holds only what JSON text may: well-formed UTF-8 (Unicode's table 3-7: no
 * overlong forms, no surrogates, nothing past U+10FFFF: jansson's rules) and no control byte
 * but tab, LF and CR. yajl is laxer on both: it takes 0xC1 0x95 for a character and \f, \v
 * for whitespace, so a consumer that decodes strictly would read other text than was checked.
 * Eight bytes at a time while they are printable ASCII, which is the bulk of every payload (a
 * base64 image). */
static int plain_text(const unsigned char *p, size_t n) {
  const uint64_t high = 0x8080808080808080ull, space = 0x2020202020202020ull;
  size_t i = 0;
  while (i < n) {
    unsigned c, lo = 0x80, hi = 0xBF;
    size_t len, k;
    uint64_t w;
    while (i + 32 <= n) {
      /* Four words at a time, one branch: the per-word loop alone cost ~2 instructions a
       * byte, +19% on the host's side of a 1 MB display (callgrind, kh_bench display). */
      uint64_t w4[4], bad;
      memcpy(w4, p + i, 32);
      bad = (w4[0] | ((w4[0] - space) & ~w4[0])) | (w4[1] | ((w4[1] - space) & ~w4[1])) |
            (w4[2] | ((w4[2] - space) & ~w4[2])) | (w4[3] | ((w4[3] - space) & ~w4[3]));
      if ((bad & high) != 0) break;
      i += 32;
    }
    if (i >= n) break;
    if (i + 8 <= n) {
      memcpy(&w, p + i, 8);
      /* no byte with the high bit set, and none below 0x20 */
      if (((w | ((w - space) & ~w)) & high) == 0) {
        i += 8;
        continue;
      }
    }
    c = p[i];
    if (c < 0x80) {
      if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return 0;
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0; /* overlong below U+0800 */
      if (c == 0xED) hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90; /* overlong below U+10000 */
      if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
    } else {
      return 0;
    }
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) return 0;
    for (k = 2; k < len; k++)
      if ((p[i + k] & 0xC0) != 0x80) return 0;
    i += len;
  }
  return 1;
}

/* Whether body[0..n) is exactly one JSON object and nothing else, by yajl, once plain_text()
 * has vouched for its bytes. yajl alone is not enough: once the top-level value is complete, it
 * swallows an unfinished token after it without complaint, even at yajl_complete_parse() (`{}"`
 * passes, the trailing quote being the start of a string it is still waiting for). So the last byte
 * must be the object's closing brace, and it is fed on its own: the object must still be open
 * after everything before it, and closed by it. Numbers are not converted (no callbacks for
 * them), so any RFC 8259 number passes, as it would for JSON.parse; jansson could not hold
 * some of what passes (integers beyond 64 bits, a NUL in a key, a lone surrogate escape), and
 * consumers that parse with it say so (kernel.c, the Lua binding), but it is one valid JSON
 * value all the same. */
static int valid_object(const char *body, size_t n) {
  /* null, boolean, integer, double, number, string, start_map, map_key, end_map, arrays */
  static const yajl_callbacks cb = {NULL,   NULL, NULL,    NULL,   NULL,   NULL,
                                    v_open, NULL, v_close, v_open, v_close};
  vstate_t v = {0, 0};
  yajl_handle h;
  int ok;
  if (n < 2 || body[0] != '{' || body[n - 1] != '}') return 0;
  if (!plain_text((const unsigned char *)body, n)) return 0;
  h = yajl_alloc(&cb, NULL, &v);
  if (h == NULL) return 0;
  ok = yajl_parse(h, (const unsigned char *)body, n - 1) == yajl_status_ok && !v.closed &&
       yajl_parse(h, (const unsigned char *)body + n - 1, 1) == yajl_status_ok && v.closed &&
       yajl_complete_parse(h) == yajl_status_ok;
  yajl_free(h);
  return ok;
}

/* For a frame shaped {"k":"v",...,"data":{...}} returns the header (without "data") and sets
 * d->data_off (relative to body) and d->data_len; returns NULL for any other shape, and for an
 * invalid payload: the caller then parses the whole frame, which gives the error.
 * Since a '"' inside a JSON string is always escaped, the first ,"data": is a key; the header
 * before it must parse as an object of string members only, so that key is the top level's,
 * and the rest up to the closing brace must be exactly one object, so "data" is the last. */
static json_t *split_payload(kh__frame_dec_t *d, const char *body, size_t n) {
  static const char key[] = ",\"data\":";
  const char *p;
  char *head;
  size_t hlen;
  json_t *j, *v;
  const char *k;
  json_error_t jerr;
  if (n < 16 || body[n - 1] != '}') return NULL;
  p = memmem(body, n, key, sizeof(key) - 1);
  if (p == NULL || (size_t)(p - body) > 4096) return NULL;
  hlen = (size_t)(p - body);
  head = malloc(hlen + 2);
  if (head == NULL) return NULL;
  memcpy(head, body, hlen);
  head[hlen] = '}';
  head[hlen + 1] = '\0';
  j = json_loadb(head, hlen + 1, JSON_REJECT_DUPLICATES, &jerr);
  free(head);
  if (j == NULL || !json_is_object(j)) {
    json_decref(j);
    return NULL;
  }
  json_object_foreach(j, k, v) {
    if (!(json_is_string(v) || json_is_array(v)) || strcmp(k, "data") == 0) {
      json_decref(j);
      return NULL;
    }
  }
  p += sizeof(key) - 1;
  while (p < body + n - 1 && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  if (!valid_object(p, (size_t)(body + n - 1 - p))) {
    /* Not this shape after all (or invalid): the full parse decides, with its own error. */
    json_decref(j);
    return NULL;
  }
  d->data_off = (size_t)(p - body);
  d->data_len = (size_t)(body + n - 1 - p);
  return j;
}

/* Parses the JSON frame at d->pos (whole in the buffer, `n` body bytes): the message, with
 * d->data_off relative to the frame's first byte. NULL after fail(). */
static json_t *parse_message(kh__frame_dec_t *d, const unsigned char *p, size_t n) {
  json_t *j;
  json_error_t jerr;
  d->data_off = d->data_len = 0;
  j = split_payload(d, (const char *)p + 4, n);
  if (j == NULL) {
    /* JSON_ALLOW_NUL: output may hold NUL characters (print("\0"), binary junk on fd 1). */
    j = json_loadb((const char *)p + 4, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (j == NULL) {
      fail(d, "malformed frame: invalid JSON: %s", jerr.text);
      return NULL;
    }
  } else {
    d->data_off += 4;
  }
  if (!json_is_object(j) || !json_is_string(json_object_get(j, "t"))) {
    json_decref(j);
    fail(d, "malformed frame: not an object with a string member \"t\"");
    return NULL;
  }
  return j;
}

int kh__frame_dec_next(kh__frame_dec_t *d, json_t **out) {
  const unsigned char *p;
  size_t avail, n, off, want, i;
  json_t *bufs;
  *out = NULL;
  if (d->failed) return KH_EPROTO;
  avail = d->len - d->pos;
  if (avail < 4) return 0; /* a pending message has 4 more bytes: its own length word */
  p = (const unsigned char *)d->buf + d->pos;
  if (d->pending == NULL) {
    json_t *j;
    n = frame_len(p);
    if (n & KH__FRAME_BINARY) return fail(d, "malformed frame: a binary frame without a message");
    /* The length is checked before any payload is buffered: a hostile prefix never makes the
     * buffer grow beyond what actually arrives, nor past d->max. */
    if (n == 0) return fail(d, "malformed frame: empty payload");
    if (n > d->max)
      return fail(d, "oversized frame: %zu bytes declared, the limit is %zu", n, d->max);
    if (avail - 4 < n) return 0;
    if ((j = parse_message(d, p, n)) == NULL) return KH_EPROTO;
    d->pend_size = 4 + n;
    bufs = json_object_get(j, "bufs");
    if (bufs != NULL && (!json_is_array(bufs) || json_array_size(bufs) == 0 ||
                         json_array_size(bufs) > KH__FRAME_BUFS_MAX)) {
      json_decref(j);
      return fail(d, "malformed frame: \"bufs\" is not an array of 1 to %d paths",
                  KH__FRAME_BUFS_MAX);
    }
    d->pending = j;
  }
  /* The message and its binary frames are handed out together, once all are in; the bytes
   * stay where they are (from d->pos), so offsets survive feeds (which move them as a block). */
  want = json_array_size(json_object_get(d->pending, "bufs"));
  off = d->pend_size;
  for (i = 0; i < want; i++) {
    size_t len;
    if (avail < off + 4) return 0;
    len = frame_len(p + off);
    if (!(len & KH__FRAME_BINARY)) {
      json_decref(d->pending);
      d->pending = NULL;
      return fail(d, "malformed frame: %zu of %zu binary frames came before a message", i, want);
    }
    len &= ~(size_t)KH__FRAME_BINARY;
    if (len > d->max) {
      json_decref(d->pending);
      d->pending = NULL;
      return fail(d, "oversized binary frame: %zu bytes declared, the limit is %zu", len, d->max);
    }
    if (avail - off - 4 < len) return 0;
    d->raw_off[i] = d->pos + off + 4;
    d->raw_len[i] = len;
    off += 4 + len;
  }
  d->nraw = want;
  if (d->data_len) d->data_off += d->pos;
  d->last_off = d->pos + 4;
  d->last_len = d->pend_size - 4;
  d->pos += off;
  *out = d->pending;
  d->pending = NULL;
  return 1;
}

size_t kh__frame_dec_nbufs(const kh__frame_dec_t *d) {
  return d->nraw;
}

const char *kh__frame_dec_buf(const kh__frame_dec_t *d, size_t i, size_t *len) {
  if (i >= d->nraw) return NULL;
  *len = d->raw_len[i];
  return d->buf + d->raw_off[i];
}

char *kh__frame_dec_raw(kh__frame_dec_t *d, size_t *len) {
  *len = d->last_len;
  return d->buf + d->last_off;
}

char *kh__frame_dec_data(kh__frame_dec_t *d, size_t *len) {
  if (d->data_len == 0) return NULL;
  *len = d->data_len;
  return d->buf + d->data_off;
}

int kh__frame_dec_finish(kh__frame_dec_t *d) {
  size_t avail;
  if (d->failed) return KH_EPROTO;
  avail = d->len - d->pos;
  if (d->pending != NULL) return fail(d, "truncated frame: a message without its binary frames");
  if (avail == 0) return 0;
  if (avail < 4) return fail(d, "truncated frame: %zu bytes of a 4-byte length", avail);
  return fail(d, "truncated frame: %zu of %zu payload bytes", avail - 4,
              frame_len((const unsigned char *)d->buf + d->pos));
}

/* One allocation for the length and the body, so that a frame goes out in one write. */
char *kh__frame_encode(const json_t *obj, size_t *len_out) {
  size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT);
  char *buf;
  if (n == 0 || n > KH__FRAME_MAX) return NULL;
  buf = malloc(n + 4);
  if (buf == NULL) return NULL;
  if (json_dumpb(obj, buf + 4, n, JSON_COMPACT) != n) {
    free(buf);
    return NULL;
  }
  kh__frame_put_len(buf, n);
  *len_out = n + 4;
  return buf;
}

char *kh__frame_encode_bufs(const json_t *obj, const kh_buffer_t *b, size_t nb, size_t *len_out) {
  json_t *o, *paths;
  char *head, *buf;
  size_t hn, total, i, off;
  if (nb == 0) return kh__frame_encode(obj, len_out);
  if (nb > KH__FRAME_BUFS_MAX || (o = json_copy((json_t *)obj)) == NULL) return NULL;
  paths = json_array();
  for (i = 0; i < nb; i++) json_array_append_new(paths, json_string(b[i].path));
  if (json_object_set_new(o, "bufs", paths) != 0 || json_array_size(paths) != nb) {
    json_decref(o);
    return NULL;
  }
  head = kh__frame_encode(o, &hn);
  json_decref(o);
  if (head == NULL) return NULL;
  total = hn;
  for (i = 0; i < nb; i++) {
    if (b[i].len > KH__FRAME_MAX || total > SIZE_MAX - 4 - b[i].len) {
      free(head);
      return NULL;
    }
    total += 4 + b[i].len;
  }
  if ((buf = realloc(head, total)) == NULL) {
    free(head);
    return NULL;
  }
  off = hn;
  for (i = 0; i < nb; i++) {
    kh__frame_put_len(buf + off, b[i].len | KH__FRAME_BINARY);
    if (b[i].len) memcpy(buf + off + 4, b[i].data, b[i].len);
    off += 4 + b[i].len;
  }
  *len_out = total;
  return buf;
}

void kh__frame_put_len(char *hdr, size_t n) {
  unsigned char *p = (unsigned char *)hdr;
  p[0] = (unsigned char)(n >> 24);
  p[1] = (unsigned char)(n >> 16);
  p[2] = (unsigned char)(n >> 8);
  p[3] = (unsigned char)n;
}
