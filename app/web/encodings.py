"""Request bodies sent with a `content-encoding`: gzip and deflate decoded, within the body limit.

The limit counts the decoded bytes, and inflating stops one byte past it, so
a small zip bomb costs at most the limit in memory before its 413. Any other
coding is refused by name (415): the relay checks and forwards plain JSON,
never bytes it could not read.
"""
from __future__ import annotations

import zlib

from ..errors import InvalidRequest, RequestTooLarge, UnsupportedEncoding

_STEP = 1 << 20  # decoded bytes produced per call: bounds a call's work and the copy it makes
_GZIP, _ZLIB, _RAW_DEFLATE = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
_KNOWN = ("", "identity", "gzip", "x-gzip", "deflate")  # one coding; a list ("gzip, br") is refused


def check_encoding(content_encoding: str | None) -> str:
    """The coding, lower-cased ("" for none); a 415 naming any coding not decoded here."""
    coding = (content_encoding or "").strip().lower()
    if coding in _KNOWN:
        return coding
    raise UnsupportedEncoding(
        f"content-encoding {(content_encoding or '').strip()[:100]!r} is not supported: send the body "
        "uncompressed, or in one of gzip, deflate")


def decode_body(data: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`data` as sent, decoded per its `content-encoding` header (absent or identity: as is)."""
    coding = check_encoding(content_encoding)
    if coding in ("gzip", "x-gzip"):
        return _inflate(data, _GZIP, "gzip", limit)
    if coding == "deflate":
        # HTTP's deflate is zlib-wrapped; some clients send raw deflate: the zlib header tells them apart
        wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return _inflate(data, _ZLIB if wrapped else _RAW_DEFLATE, "deflate", limit)
    return data


def _inflate(data: bytes, wbits: int, name: str, limit: int) -> bytes:
    out = bytearray()
    rest = data
    while True:  # a gzip body may hold several members, one after another
        inflater = zlib.decompressobj(wbits)
        pending = rest
        try:
            while not inflater.eof:
                chunk = inflater.decompress(pending, min(_STEP, limit + 1 - len(out)))
                out += chunk
                if len(out) > limit:
                    raise RequestTooLarge(f"request body too large once decoded from {name} "
                                          f"(limit {limit} bytes)")
                if not chunk and len(inflater.unconsumed_tail) == len(pending):
                    break  # no progress: the input ran out before the end of the data
                pending = inflater.unconsumed_tail
        except zlib.error:
            raise InvalidRequest(f"the request body is not valid {name} data") from None
        if not inflater.eof:
            raise InvalidRequest(f"the request body is not valid {name} data (it ends too early)")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if wbits != _GZIP:
            raise InvalidRequest(f"the request body has bytes after the end of its {name} data")
