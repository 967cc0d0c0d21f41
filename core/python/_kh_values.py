# _kh_values: the values that cross between a kernel and its host (host function arguments and
# answers; comm data may use it too): JSON, with bytes carried beside it as buffers.
#
#   encode(obj) -> (json_bytes, [(path, bytes), ...])
#   decode(json_text, [(path, bytes), ...]) -> obj
#
# A value is None, bool, an int within 64 bits (a host holds integers exactly up to 2**63 - 1),
# a finite float, str, list or tuple (a JSON array), dict with str keys (a JSON object), or
# bytes / bytearray / memoryview. Bytes travel as a null in the JSON and a buffer at its JSON
# Pointer (RFC 6901: "/2", "/0/data", "" for the whole value), as kh_buffer_t says in
# kernelhost.h, and come back as bytes. Anything else (another object, NaN or an infinity, an
# int beyond 64 bits, a dict key that is not a str, a circular reference, a str with a lone
# surrogate, nesting deeper than MAX_DEPTH) raises TypeError naming what and where.

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
# Below jansson's parser limit (2048), with room for the levels a frame or reply wraps around.
MAX_DEPTH = 1000

_BYTES = (bytes, bytearray, memoryview)


def _where(path):
    return "at %s" % path if path else "as the whole value"


def _escape(key):
    return key.replace("~", "~0").replace("/", "~1")


def _plain(v, path, bufs, active, depth):
    """v with its bytes replaced by None (recorded in bufs with their paths) and every value
    checked; raises TypeError."""
    t = type(v)
    if t is str or t is bool or v is None:
        return v
    if t is int:
        if INT_MIN <= v <= INT_MAX:
            return v
        raise TypeError("int %s %s is beyond 64 bits: a host holds integers exactly only from "
                        "-2**63 to 2**63-1 (pass a float or a str)" % (_short(v), _where(path)))
    if t is float:
        if v - v == 0.0:  # finite
            return v
        raise TypeError("%r %s has no JSON form" % (v, _where(path)))
    if t is list or t is tuple or t is dict:
        if depth >= MAX_DEPTH:
            raise TypeError("the value nests deeper than %d levels %s" % (MAX_DEPTH, _where(path)))
        key = id(v)
        if key in active:
            raise TypeError("circular reference %s" % _where(path))
        active.add(key)
        try:
            if t is dict:
                out = {}
                for k, x in v.items():
                    if type(k) is not str:
                        if not isinstance(k, str):
                            raise TypeError("dict key %r %s is a %s: keys must be str" %
                                            (k, _where(path), type(k).__name__))
                        k = str(k)
                    out[k] = _plain(x, "%s/%s" % (path, _escape(k)), bufs, active, depth + 1)
                return out
            return [_plain(x, "%s/%d" % (path, i), bufs, active, depth + 1)
                    for i, x in enumerate(v)]
        finally:
            active.discard(key)
    if t is bytes:
        bufs.append((path, v))
        return None
    if isinstance(v, _BYTES):
        bufs.append((path, bytes(v)))
        return None
    # Subclasses of the plain types, as the plain value (an IntEnum as its int, ...).
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return _plain(int(v), path, bufs, active, depth)
    if isinstance(v, float):
        return _plain(float(v), path, bufs, active, depth)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (list, tuple)):
        return _plain(list(v), path, bufs, active, depth)
    if isinstance(v, dict):
        return _plain(dict(v), path, bufs, active, depth)
    raise TypeError("a %s %s cannot be passed to the host: pass None, bool, int, float, str, "
                    "bytes, list, tuple or dict" % (type(v).__name__, _where(path)))


def _short(n):
    s = str(n)
    return s if len(s) <= 40 else s[:18] + "..." + s[-18:]


def _make_encoder():
    try:
        from _json import make_encoder, encode_basestring
    except ImportError:
        import json
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False,
                                separators=(",", ":")).encode
    # No markers: _plain() has checked for cycles and made every container afresh.
    it = make_encoder(None, None, encode_basestring, None, ":", ",", False, False, False)
    return lambda obj: "".join(it(obj, 0))


_encode = _make_encoder()


def encode(obj):
    """(UTF-8 JSON bytes, [(path, bytes)]) for obj; TypeError when obj holds what has no host
    value."""
    if obj == () or obj == []:  # a call without arguments: the most common one
        return b"[]", []
    bufs = []
    text = _encode(_plain(obj, "", bufs, set(), 0))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError("a str holds a lone surrogate (%r), which has no UTF-8 form" %
                        exc.object[exc.start:exc.end]) from None
    return data, bufs


def _unescape(token):
    return token.replace("~1", "/").replace("~0", "~")


def _put(root, path, data):
    """root with the value at JSON Pointer path replaced by data."""
    if path == "":
        return data
    parts = path.split("/")
    if parts[0] != "":
        raise ValueError("buffer path %r is not a JSON Pointer" % path)
    parts = [_unescape(p) for p in parts[1:]]
    node = root
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = data
    else:
        node[last] = data
    return root


_loads = None


def decode(text, buffers=()):
    """The value of a JSON text (str or bytes) with bytes put back at the buffers' paths."""
    global _loads
    if not buffers and (text == "null" or text == b"null"):  # a function that returns nothing
        return None
    if _loads is None:
        import json
        _loads = json.loads
    value = _loads(text)
    for path, data in buffers:
        value = _put(value, path, bytes(data))
    return value
