"""Streaming: bytes pass through as they arrive, usage is collected, failures and disconnects are settled."""
import json
import socket
import time

import pytest
import requests

from app.models import ApiKey
from app.wire.sse import SSEParser
from tests.support.app import anthropic_channel, wait_for_row
from tests.support.bodies import messages_body
from tests.support.constants import ANSWER_CANARY, PROMPT_CANARY
from tests.support.upstream import (anthropic_message, anthropic_stream_events, encode_event, error_answer,
                                    error_event, json_answer, message_start_event, raw_sse_answer, sse_answer,
                                    sse_then_drop, sse_then_hang, tool_use_stream_events)

BODY = messages_body(content=f"Hello {PROMPT_CANARY}", stream=True)


def events_of(data: bytes):
    return SSEParser().feed(data)


def test_stream_bytes_pass_through_unchanged(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    events = anthropic_stream_events(["Hel", "lo", ANSWER_CANARY], extra_events=[
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh=="}}),
        ("brand_new_event", {"type": "brand_new_event", "x": 1}),
    ])
    upstream.script(sse_answer(events, headers={"request-id": "req_up_s"}))
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["upstream-request-id"] == "req_up_s"
    data = resp.get_data()
    assert data == b"".join(encode_event(name, payload) for name, payload in events)
    names = [e for e, _ in events_of(data)]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "brand_new_event" in names and "ping" in names


def test_stream_usage_merges_start_and_delta_keeping_cache_tokens(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    start = {"input_tokens": 500, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 20000,
             "output_tokens": 1}
    # the final delta omits the cache fields and nulls one: they must survive
    delta = {"output_tokens": 321, "input_tokens": None, "cache_read_input_tokens": None}
    upstream.script(sse_answer(anthropic_stream_events(["x"], usage_start=start, usage_delta=delta)))
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    resp.get_data()
    row = wait_for_row()
    assert (row.input_tokens, row.output_tokens, row.cache_creation_input_tokens,
            row.cache_read_input_tokens) == (500, 321, 1000, 20000)
    assert row.cost_nanos == 500 * 3000 + 321 * 15000 + 1000 * 3750 + 20000 * 300
    assert row.stream is True and row.ttft_ms is not None and row.status == 200
    key_row = ApiKey.get_by_id(key["id"])
    assert key_row.used_tokens == 500 + 321 + 1000 + 20000 and key_row.used_nanos == row.cost_nanos


def test_events_reach_the_client_before_the_upstream_finishes(live, admin, upstream, key):
    anthropic_channel(admin, upstream)
    answer = sse_answer(anthropic_stream_events(["a", "b", "c", "d"]), delay=0.3)
    upstream.script(answer)
    received = []
    with requests.post(f"{live}/v1/messages", json=BODY, headers={"x-api-key": key["key"]},
                       stream=True, timeout=30) as resp:
        for chunk in resp.iter_content(chunk_size=None):
            received.append(time.monotonic())
    total_send_time = answer.sent_at[-1] - answer.sent_at[0]
    assert total_send_time > 2.0  # 9 events, 0.3 s apart
    # the first event arrived long before the last was even sent
    assert received[0] < answer.sent_at[-1] - 1.5
    assert len(received) >= 5  # arrived in pieces, not as one buffered block


def test_tool_use_stream_through_the_sdk(live, admin, upstream, key):
    anthropic = pytest.importorskip("anthropic")
    anthropic_channel(admin, upstream)
    upstream.script(sse_answer(tool_use_stream_events("get_weather", ['{"city":', ' "Paris"}'],
                                                      text_chunks=["Let me ", "check."])))
    sdk = anthropic.Anthropic(api_key=key["key"], base_url=live, max_retries=0)
    with sdk.messages.stream(model="claude-sonnet-4-6", max_tokens=100,
                             messages=[{"role": "user", "content": "Weather in Paris?"}],
                             tools=[{"name": "get_weather", "description": "d",
                                     "input_schema": {"type": "object"}}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Let me check."
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].name == "get_weather" and final.content[1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 15


def test_sdk_non_streaming_and_errors(live, admin, upstream, key):
    anthropic = pytest.importorskip("anthropic")
    anthropic_channel(admin, upstream)
    upstream.script(json_answer(anthropic_message("Hi!")),
                    error_answer(400, "invalid_request_error", "max_tokens: too big"))
    sdk = anthropic.Anthropic(api_key=key["key"], base_url=live, max_retries=0)
    message = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                  messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hi!" and message.usage.input_tokens == 25
    with pytest.raises(anthropic.BadRequestError) as err:
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                            messages=[{"role": "user", "content": "hi"}])
    assert "too big" in str(err.value)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="sk-octo-wrong", base_url=live, max_retries=0).messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    bearer = anthropic.Anthropic(auth_token=key["key"], base_url=live, max_retries=0)
    upstream.script(json_answer(anthropic_message("bearer ok")))
    assert bearer.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                  messages=[{"role": "user", "content": "hi"}]).content[0].text == "bearer ok"


def test_upstream_drop_mid_stream_becomes_an_error_event(client, admin, upstream, key):
    anthropic_channel(admin, upstream, name="a")
    anthropic_channel(admin, upstream, name="b")
    events = anthropic_stream_events(["one", "two"])[:4]  # start, block start, ping, first delta
    upstream.script(sse_then_drop(events))
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    frames = events_of(resp.get_data())
    assert frames[0][0] == "message_start"
    name, data = frames[-1]
    assert name == "error"
    payload = json.loads(data)
    assert payload["type"] == "error" and payload["error"]["type"] == "api_error"
    assert len(upstream.requests) == 1  # no failover after the first byte
    row = wait_for_row()
    assert row.error_type == "api_error" and row.input_tokens == 25 and row.output_tokens >= 1


def test_upstream_stall_mid_stream_times_out_into_an_error_event(client, admin, upstream, key):
    anthropic_channel(admin, upstream, timeout_s=0.5)
    upstream.script(sse_then_hang(anthropic_stream_events(["one"])[:4], seconds=10))
    started = time.monotonic()
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    frames = events_of(resp.get_data())
    assert time.monotonic() - started < 5
    assert frames[-1][0] == "error" and json.loads(frames[-1][1])["error"]["type"] == "timeout_error"
    assert wait_for_row().error_type == "timeout_error"


def test_upstream_error_event_is_passed_and_recorded(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    upstream.script(sse_answer([message_start_event(), error_event("overloaded_error", "Overloaded")]))
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    assert events_of(resp.get_data())[-1][0] == "error"
    assert wait_for_row().error_type == "overloaded_error"


def test_events_split_across_chunks_and_crlf(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    whole = b"".join(encode_event(n, p) for n, p in anthropic_stream_events(["x"], usage_delta={"output_tokens": 42}))
    whole = whole.replace(b"\n", b"\r\n")
    pieces = [whole[i:i + 7] for i in range(0, len(whole), 7)]
    upstream.script(raw_sse_answer(pieces))
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    assert resp.get_data() == whole
    assert wait_for_row().output_tokens == 42


def test_failover_before_the_stream_starts(client, admin, upstream, key):
    anthropic_channel(admin, upstream, name="a", priority=1)
    anthropic_channel(admin, upstream, name="b")
    upstream.script(error_answer(529, "overloaded_error", "Overloaded"),
                    sse_answer(anthropic_stream_events(["ok"])))
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    assert resp.status_code == 200 and events_of(resp.get_data())[-1][0] == "message_stop"
    assert wait_for_row().attempts == 2


def test_client_disconnect_closes_the_upstream_and_bills_what_was_seen(live, admin, upstream, key):
    anthropic_channel(admin, upstream)
    start = {"input_tokens": 700, "cache_read_input_tokens": 5000, "output_tokens": 1}
    events = anthropic_stream_events(["word "] * 200, usage_start=start)
    upstream.script(sse_answer(events, delay=0.1))
    host, port = live.removeprefix("http://").split(":")
    body = json.dumps(BODY).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                 + f"x-api-key: {key['key']}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    received = b""
    while received.count(b"content_block_delta") < 5:
        received += sock.recv(65536)
    sock.close()
    gone_at = time.monotonic()
    assert upstream.wait_for_disconnect(5)
    assert upstream.disconnects[0] - gone_at < 3.0
    row = wait_for_row()
    assert row.client_disconnected is True
    assert row.input_tokens == 700 and row.cache_read_input_tokens == 5000
    assert row.output_tokens >= 2  # estimated from the words forwarded, no final usage came
    assert ApiKey.get_by_id(key["id"]).used_tokens == row.input_tokens + row.output_tokens + 5000
