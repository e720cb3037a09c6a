"""1. Malformed upstream answers (broken SSE, invalid JSON with a 200) pass through and are logged;
2. an upstream closing mid-body (not streaming) is a 502 without failover."""
from __future__ import annotations

import json
import time

import pytest
import requests

from app.models import ApiKey
from tests.faults.helpers import STREAM_BODY, one_row, post, sonnet_cost
from tests.support.app import anthropic_channel, assert_error
from tests.support.upstream import (anthropic_message, body_answer, encode_event, json_answer,
                                    message_start_event, raw_answer, raw_sse_answer)

# --------------------------------------------------------------------------- 1. malformed upstream answers


MALFORMED_STREAMS = {
    # a valid message_start, then garbage of every kind, then text, then a broken message_delta
    "bad-delta": [
        encode_event(*message_start_event(usage={"input_tokens": 40, "cache_read_input_tokens": 300})),
        b"this line has no colon and no event\n\n",
        b": a comment line\n\n",
        b"event: ping\n\n",  # an event with no data
        b"\x00\xff\xfe\x80\x81binary junk\xc3\x28\n\n",
        b"data: {\"type\": \"content_block_start\", \"index\": 0\n\n",  # truncated JSON, no event line
        encode_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": "x" * 40}}),
        b"event: message_delta\ndata: {\"type\": \"message_delta\", \"usage\": {\"output_tokens\": 9\n\n",
        b"event: message_delta\ndata: [1, 2, 3]\n\n",
        b"event: content_block_delta\ndata: \"just a string\"\n\n",
        encode_event("message_stop", {"type": "message_stop"}),
    ],
    # nothing readable at all: message_start itself is not JSON
    "bad-start": [
        b"event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"usage\": \n\n",
        b"event: message_delta\ndata: not json at all\n\n",
        b"\xff\xd8\xff\xe0 binary\r\n\r\n",
        b"event:\ndata:\n\n",
        b"retry: 10\nid: 7\n\n",
    ],
}
EXPECTED_USAGE = {  # (input, output, cache_write, cache_read) the relay can read from each
    "bad-delta": (40, 10, 0, 300),  # output: estimated from the 40 text characters (≈4 a token)
    "bad-start": (0, 0, 0, 0),
}


@pytest.mark.parametrize("case", list(MALFORMED_STREAMS))
def test_malformed_sse_passes_through_and_is_logged(client, admin, upstream, key, case):
    anthropic_channel(admin, upstream)
    chunks = MALFORMED_STREAMS[case]
    upstream.script(raw_sse_answer(chunks))
    resp = post(client, key, STREAM_BODY)
    assert resp.status_code == 200
    assert resp.get_data() == b"".join(chunks)  # byte for byte, garbage included
    row = one_row(resp.headers["request-id"])
    usage = (row.input_tokens, row.output_tokens, row.cache_creation_input_tokens, row.cache_read_input_tokens)
    assert usage == EXPECTED_USAGE[case]
    assert row.status == 200 and row.stream is True and row.error_type is None
    assert row.cost_nanos == sonnet_cost(*usage)
    shown = admin.get(f"/admin/keys/{key['id']}").get_json()
    assert shown["used_tokens"] == sum(usage)

    upstream.script(json_answer(anthropic_message("still fine")))
    after = post(client, key)  # the relay is unharmed
    assert after.status_code == 200 and after.get_json()["content"][0]["text"] == "still fine"


def test_malformed_sse_through_a_real_server(live, admin, upstream, key):
    """The same garbage on a real socket: the client reads every byte and a clean end of stream."""
    anthropic_channel(admin, upstream)
    chunks = MALFORMED_STREAMS["bad-delta"]
    upstream.script(raw_sse_answer(chunks, delay=0.02))
    with requests.post(f"{live}/v1/messages", json=STREAM_BODY, headers={"x-api-key": key["key"]},
                       stream=True, timeout=10) as resp:
        assert resp.status_code == 200
        data = b"".join(resp.iter_content(chunk_size=None))
    assert data == b"".join(chunks)
    assert one_row(resp.headers["request-id"]).input_tokens == 40


def test_invalid_json_with_200_passes_through_with_a_zero_usage_row(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    junk = b'{"id": "msg_01", "type": "message", "usage": {"input_tokens": 12'  # cut short
    upstream.script(body_answer(junk, content_type="application/json"))
    resp = post(client, key)
    assert resp.status_code == 200
    assert resp.get_data() == junk
    row = one_row(resp.headers["request-id"])
    assert row.status == 200 and row.stream is False
    assert (row.input_tokens, row.output_tokens, row.cost_nanos) == (0, 0, 0)
    assert ApiKey.get_by_id(key["id"]).used_tokens == 0


def test_invalid_json_from_an_openai_channel_is_a_502(client, admin, upstream, key):
    admin.create_channel(name="oai", type="openai", base_url=upstream.url + "/v1", api_key="sk-oai-test",
                         models=["claude-*"])
    upstream.script(body_answer(b"<html>not json</html>", content_type="application/json"))
    resp = post(client, key)
    body = assert_error(resp, 502, "api_error", contains="not JSON")
    assert upstream.requests[0].path == "/v1/chat/completions"
    row = one_row(body["request_id"])
    assert row.status == 502 and row.error_type == "api_error" and row.attempts == 1
    assert (row.input_tokens, row.output_tokens) == (0, 0)


# --------------------------------------------------------------------------- 2. closed mid-body, not streaming


def test_upstream_closing_mid_body_is_a_502_without_failover(client, admin, upstream, key):
    """The head said 200 and 500 bytes; 40 came, then the connection closed.

    Documented behaviour (docs/api.md, Failover and cooldown; README): failover happens on a connect error, a timeout
    before the response head, or a retryable status -- this answer had a 200 head, so the
    client gets 502 api_error from the first channel and the second is never tried.
    """
    first = anthropic_channel(admin, upstream, name="first", priority=1)
    anthropic_channel(admin, upstream, name="second")
    partial = json.dumps(anthropic_message("a long answer " * 20)).encode()[:40]
    upstream.script(raw_answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 500\r\n\r\n" + partial),
                    json_answer(anthropic_message("the next answer")))
    started = time.monotonic()
    resp = post(client, key)
    assert time.monotonic() - started < 5
    body = assert_error(resp, 502, "api_error", contains="broke")
    assert partial not in resp.get_data()  # none of the half answer leaks to the client
    assert len(upstream.requests) == 1  # no failover
    row = one_row(body["request_id"])
    assert row.status == 502 and row.error_type == "api_error" and row.attempts == 1
    assert row.channel_id == first["id"] and row.output_tokens == 0

    resp = post(client, key)  # the next request is served normally
    assert resp.status_code == 200
    assert resp.get_json()["content"][0]["text"] == "the next answer"
