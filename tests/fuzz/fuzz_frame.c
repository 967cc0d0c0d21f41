/* fuzz_frame.c: libFuzzer target for the worker protocol's frame decoder (core/src/frame.c) and
 * message check (core/src/protocol.c). Feeds the input whole and in small pieces; every decoded
 * frame must re-encode to an equal frame, and a payload handed over unparsed must be exactly
 * the JSON object a full parse finds; malformed, truncated and oversized input must end in
 * KH_EPROTO with a message. Single-threaded, like every libFuzzer target. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define FUZZ_MAX (1u << 20)

static void check(int cond) {
  if (!cond) abort();
}

/* The protocol's shape check (protocol.c) on every decoded frame, both ways: a message it
 * accepts is one the tables name, travelling that way. */
static void protocol_check(json_t *msg, int split) {
  char why[200];
  int dir;
  for (dir = KH__P_TO_WORKER; dir <= KH__P_TO_HOST; dir++) {
    kh__pmsg_t kind = kh__proto_check(msg, (kh__pdir_t)dir, split, why, sizeof(why));
    const char *t = json_string_value(json_object_get(msg, "t"));
    if (kind != KH__P_NONE) {
      check(strcmp(kh__proto_name(kind), t) == 0);
      check(kh__proto_kind(t) == kind);
    } else {
      check(why[0] != '\0');
    }
  }
}

/* Decodes everything in d; returns the number of frames, checking each round trip. */
static int drain(kh__frame_dec_t *d) {
  json_t *msg;
  int rc, n = 0;
  while ((rc = kh__frame_dec_next(d, &msg)) == 1) {
    size_t len = 0, nb = kh__frame_dec_nbufs(d), i;
    kh_buffer_t views[KH__FRAME_BUFS_MAX];
    char *buf = NULL;
    int paths_ok = 1;
    /* A message with binary frames re-encodes with them (when its "bufs" are all strings). */
    check(nb == json_array_size(json_object_get(msg, "bufs")));
    for (i = 0; i < nb; i++) {
      views[i].path = json_string_value(json_array_get(json_object_get(msg, "bufs"), i));
      views[i].data = kh__frame_dec_buf(d, i, &views[i].len);
      check(views[i].data != NULL);
      if (views[i].path == NULL) paths_ok = 0;
    }
    if (paths_ok) buf = nb ? kh__frame_encode_bufs(msg, views, nb, &len) : kh__frame_encode(msg, &len);
    kh__frame_dec_t again;
    json_t *back = NULL;
    check(json_is_string(json_object_get(msg, "t")));
    {
      /* A payload handed over unparsed (validated by yajl) must be exactly one JSON object for
       * jansson too. The two differ only where JSON's grammar allows what jansson cannot hold:
       * lone UTF-16 surrogate escapes, a NUL in a key, numbers beyond its ranges. */
      size_t dlen, rlen;
      const char *dp = kh__frame_dec_data(d, &dlen);
      const char *raw = kh__frame_dec_raw(d, &rlen);
      if (dp != NULL) {
        json_error_t err;
        json_t *x = json_loadb(dp, dlen, JSON_ALLOW_NUL, &err), *whole;
        check(json_is_object(x) ||
              (x == NULL && (strstr(err.text, "nicode") != NULL ||
                             json_error_code(&err) == json_error_null_byte_in_key ||
                             json_error_code(&err) == json_error_numeric_overflow)));
        check(json_object_get(msg, "data") == NULL);
        /* Split or not, a frame means the same: where jansson reads the whole frame, its
         * "data" is the payload and the rest is the header. */
        whole = json_loadb(raw, rlen, JSON_ALLOW_NUL, NULL);
        if (whole != NULL) {
          check(x != NULL && json_equal(json_object_get(whole, "data"), x));
          json_object_del(whole, "data");
          check(json_equal(whole, msg));
        }
        json_decref(whole);
        json_decref(x);
      }
      protocol_check(msg, dp != NULL);
    }
    if (buf != NULL) {
      kh__frame_dec_init(&again, 0);
      check(kh__frame_dec_feed(&again, buf, len) == 0);
      check(kh__frame_dec_next(&again, &back) == 1);
      {
        /* Re-encoded compactly, a frame may now take the split path: put its payload back. */
        size_t dlen2;
        const char *dp2 = kh__frame_dec_data(&again, &dlen2);
        if (dp2 != NULL) {
          json_t *x2 = json_loadb(dp2, dlen2, JSON_ALLOW_NUL, NULL);
          check(x2 != NULL);
          json_object_set_new(back, "data", x2);
        }
      }
      check(json_equal(msg, back));
      check(kh__frame_dec_nbufs(&again) == nb);
      for (i = 0; i < nb; i++) {
        size_t blen;
        const char *b = kh__frame_dec_buf(&again, i, &blen);
        check(b != NULL && blen == views[i].len && memcmp(b, views[i].data, blen) == 0);
      }
      check(kh__frame_dec_finish(&again) == 0);
      json_decref(back);
      kh__frame_dec_free(&again);
      free(buf);
    }
    json_decref(msg);
    n++;
  }
  if (rc < 0) check(d->failed && d->err[0] != '\0');
  return rc < 0 ? -1 : n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kh__frame_dec_t whole, pieces;
  size_t i = 0, step;
  int a, b = 0, fa, fb;
  /* Whole. */
  kh__frame_dec_init(&whole, FUZZ_MAX);
  kh__frame_dec_feed(&whole, data, size);
  a = drain(&whole);
  fa = kh__frame_dec_finish(&whole);
  /* In pieces of 1..7 bytes (the first byte picks the rhythm): the same frames, same verdict. */
  kh__frame_dec_init(&pieces, FUZZ_MAX);
  step = size ? (size_t)(data[0] % 7) + 1 : 1;
  while (i < size && b >= 0) {
    size_t n = size - i < step ? size - i : step;
    int r;
    kh__frame_dec_feed(&pieces, data + i, n);
    i += n;
    r = drain(&pieces);
    b = r < 0 ? -1 : b + r;
  }
  fb = kh__frame_dec_finish(&pieces);
  check(a == b);
  check((fa == 0) == (fb == 0));
  if (a >= 0 && fa == 0) check(whole.pos == size);
  kh__frame_dec_free(&whole);
  kh__frame_dec_free(&pieces);
  return 0;
}
