"""Request bodies sent with `content-encoding: gzip` or `deflate`, as curl or requests send them.

Through a real socket (the `live` server) to the loopback upstream: the upstream
must see the decoded JSON, without the content-encoding header; the decoded size
counts against the body limit, and a zip bomb is refused without being inflated.
"""
import gzip
import json
import tracemalloc
import zlib

import pytest
import requests

from app.models import RequestLog
from tests.support.app import anthropic_channel, assert_error, settled
from tests.support.bodies import messages_body
from tests.support.upstream import json_answer

BODY = messages_body("claude-sonnet-4-5", 10, "Hello, compressed \u00e9")
RAW = json.dumps(BODY, ensure_ascii=False).encode()


class Answer:
    """The parts of a `requests` response `assert_error` reads."""

    def __init__(self, resp: requests.Response):
        self.status_code = resp.status_code
        self.headers = resp.headers
        self._resp = resp

    def get_json(self):
        return self._resp.json()

    def get_data(self, as_text=False):
        return self._resp.text if as_text else self._resp.content


@pytest.fixture
def key(admin, upstream):
    anthropic_channel(admin, upstream)
    return admin.create_key(name="gz")["key"]


def send(live, key, data, encoding, path="/v1/messages", **headers):
    return requests.post(live + path, data=data, timeout=30, headers={
        "x-api-key": key, "content-type": "application/json", "content-encoding": encoding, **headers})


def deflate_raw(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


ENCODED = {
    "gzip": gzip.compress(RAW),
    "deflate": zlib.compress(RAW),  # HTTP's deflate: zlib-wrapped
    "deflate-raw": deflate_raw(RAW),  # what some clients send as deflate
    "gzip-two-members": gzip.compress(RAW[:20]) + gzip.compress(RAW[20:]),
}


@pytest.mark.parametrize("form", sorted(ENCODED))
def test_encoded_bodies_are_decoded_and_forwarded_plain(app, live, key, upstream, form):
    encoding = form.split("-")[0]
    resp = send(live, key, ENCODED[form], encoding.upper() if form == "gzip" else encoding)
    assert resp.status_code == 200, resp.text
    assert resp.json()["type"] == "message"
    seen = upstream.requests[-1]
    assert seen.body == RAW  # the bytes that were checked, decoded
    assert "content-encoding" not in seen.headers
    assert int(seen.headers["content-length"]) == len(RAW)
    settled(app)
    assert RequestLog.select().count() == 1


def test_count_tokens_and_a_chunked_gzip_body(app, live, key, upstream):
    upstream.script(json_answer({"input_tokens": 12}), path="/v1/messages/count_tokens")
    body = gzip.compress(json.dumps({"model": "claude-x", "messages": BODY["messages"]}).encode())
    resp = send(live, key, body, "gzip", path="/v1/messages/count_tokens")
    assert resp.status_code == 200 and resp.json() == {"input_tokens": 12}, resp.text
    assert upstream.requests[-1].json()["messages"] == BODY["messages"]

    packed = gzip.compress(RAW)
    resp = send(live, key, iter([packed[:10], packed[10:]]), "gzip")  # no Content-Length: chunked
    assert resp.status_code == 200, resp.text
    assert upstream.requests[-1].body == RAW


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip", "identity;q=0", "x-custom"])
def test_other_encodings_are_refused_by_name_with_415(live, key, upstream, encoding):
    resp = send(live, key, RAW, encoding)
    assert_error(Answer(resp), 415, "invalid_request_error", contains=repr(encoding))
    assert not upstream.requests


def test_identity_is_no_encoding(live, key, upstream):
    resp = send(live, key, RAW, "identity")
    assert resp.status_code == 200, resp.text
    assert upstream.requests[-1].body == RAW


BROKEN = [
    ("not gzip at all", RAW, "gzip"),
    ("truncated gzip", gzip.compress(RAW)[:-12], "gzip"),
    ("gzip with trailing garbage", gzip.compress(RAW) + b"garbage!", "gzip"),
    ("bad deflate", b"\x78\x9c" + b"\xff" * 20, "deflate"),
    ("deflate with trailing bytes", zlib.compress(RAW) + b"x", "deflate"),
    ("empty gzip", b"", "gzip"),
]


@pytest.mark.parametrize("name,data,encoding", BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_encoded_bodies_are_400(live, key, upstream, name, data, encoding):
    resp = send(live, key, data, encoding)
    body = assert_error(Answer(resp), 400, "invalid_request_error")
    assert encoding in body["error"]["message"], (name, body)
    assert not upstream.requests


def test_the_decoded_size_counts_against_the_limit(app, live, key, upstream):
    limit = 64 * 1024
    app.config["MAX_CONTENT_LENGTH"] = limit
    try:
        filler = limit - len(json.dumps({**BODY, "messages": [{"role": "user", "content": ""}]}))
        at_limit = json.dumps({**BODY, "messages": [{"role": "user", "content": "y" * filler}]}).encode()
        assert len(at_limit) == limit
        over = at_limit.replace(b'"y', b'"yy', 1)
        for encoding, pack in (("gzip", gzip.compress), ("deflate", zlib.compress)):
            assert len(pack(over)) < limit // 100  # small on the wire
            ok = send(live, key, pack(at_limit), encoding)
            assert ok.status_code == 200, ok.text
            assert upstream.requests[-1].body == at_limit
            refused = send(live, key, pack(over), encoding)
            assert_error(Answer(refused), 413, "request_too_large", contains=f"limit {limit} bytes")
    finally:
        app.config["MAX_CONTENT_LENGTH"] = app.config["OCTORELAY"].max_body_bytes


def gzip_bomb(decoded_mb: int) -> bytes:
    """A JSON body of `decoded_mb` MB, gzipped (about 1000:1), built without holding it decoded."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = b'{"model":"claude-x","max_tokens":1,"messages":[{"role":"user","content":"'
    parts = [packer.compress(head)]
    block = b"a" * (1 << 20)
    for _ in range(decoded_mb):
        parts.append(packer.compress(block))
    parts.append(packer.compress(b'"}]}') + packer.flush())
    return b"".join(parts)


def test_a_zip_bomb_gets_413_without_being_inflated(app, live, key, upstream):
    limit = 1 << 20
    app.config["MAX_CONTENT_LENGTH"] = limit
    bomb = gzip_bomb(128)  # 128 MB once inflated, well under the limit on the wire
    assert len(bomb) < limit
    try:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            resp = send(live, key, bomb, "gzip")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        app.config["MAX_CONTENT_LENGTH"] = app.config["OCTORELAY"].max_body_bytes
    assert_error(Answer(resp), 413, "request_too_large", contains="decoded from gzip")
    assert not upstream.requests
    # the whole process (relay, client and this test): a few times the 1 MB limit, never 128 MB
    assert peak < 16 * limit, f"peak {peak / 2**20:.1f} MB while refusing a 128 MB bomb"
