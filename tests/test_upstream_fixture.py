"""Self-test for the scripted fake upstream in tests/support/upstream.py, driven by plain `requests`."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from tests.support.upstream import (Upstream, anthropic_message, anthropic_stream_events, body_answer,
                                    drop_answer, error_answer, error_event, hang_answer, json_answer,
                                    raw_answer, raw_sse_answer, sse_answer, sse_then_drop, sse_then_hang,
                                    tool_use_stream_events)


def post(up, path="/v1/messages", **kwargs):
    kwargs.setdefault("json", {"model": "claude-sonnet-4-5", "messages": []})
    kwargs.setdefault("timeout", 5)
    return requests.post(up.url + path, **kwargs)


def sse_data(lines):
    """The parsed `data:` payloads of SSE lines (bytes)."""
    return [json.loads(line[5:]) for line in lines if line.startswith(b"data:")]


# --------------------------------------------------------------------------- plain answers


def test_json_answer(upstream):
    upstream.script(json_answer({"ok": True}, status=201, headers={"x-extra": "1"}))
    resp = post(upstream)
    assert resp.status_code == 201
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["content-length"] == str(len(resp.content))
    assert resp.headers["x-extra"] == "1"
    assert resp.json() == {"ok": True}


def test_fifo_script_then_default(upstream):
    upstream.script(json_answer({"n": 1}), json_answer({"n": 2}))
    assert upstream.pending == 2
    assert post(upstream).json() == {"n": 1}
    assert post(upstream).json() == {"n": 2}
    default = post(upstream).json()
    assert default["type"] == "message" and default["content"][0]["text"] == "Hello"
    assert set(default["usage"]) >= {"input_tokens", "cache_creation_input_tokens",
                                     "cache_read_input_tokens", "output_tokens"}
    assert upstream.pending == 0


def test_per_path_queue_takes_precedence(upstream):
    upstream.script(json_answer({"general": 1}))
    upstream.script(json_answer({"input_tokens": 7}), path="/v1/messages/count_tokens")
    assert post(upstream, "/v1/messages/count_tokens?beta=true").json() == {"input_tokens": 7}
    assert post(upstream, "/v1/messages/count_tokens").json() == {"general": 1}
    assert post(upstream).json()["type"] == "message"


def test_defaults_and_callable_answers(upstream):
    upstream.set_default(json_answer({"input_tokens": 3}), path="/v1/messages/count_tokens")
    upstream.set_default(lambda req: json_answer({"echo": req.json()["model"]}))
    assert post(upstream, "/v1/messages/count_tokens").json() == {"input_tokens": 3}
    assert post(upstream).json() == {"echo": "claude-sonnet-4-5"}


def test_error_answer(upstream):
    answer = error_answer(529, "overloaded_error", "Overloaded", headers={"retry-after": "3"})
    upstream.script(answer)
    resp = post(upstream)
    assert resp.status_code == 529
    body = resp.json()
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                    "request_id": answer.request_id}
    assert answer.request_id.startswith("req_upstream_")
    assert resp.headers["request-id"] == answer.request_id
    assert resp.headers["retry-after"] == "3"


def test_body_and_raw_answers(upstream):
    upstream.script(body_answer("<html>bad gateway</html>", 502, "text/html"),
                    raw_answer(b"this is not http\r\n\r\n"))
    resp = post(upstream)
    assert (resp.status_code, resp.text) == (502, "<html>bad gateway</html>")
    with pytest.raises(requests.ConnectionError):
        post(upstream)


# --------------------------------------------------------------------------- streaming


def test_sse_events_arrive_incrementally(upstream):
    events = anthropic_stream_events(["Hel", "lo"])
    answer = sse_answer(events[:4], delay=0.3)
    upstream.script(answer)
    with post(upstream, stream=True) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["transfer-encoding"] == "chunked"
        lines, first_at = [], None
        for line in resp.iter_lines():
            lines.append(line)
            if first_at is None and line.startswith(b"data:"):
                first_at = time.monotonic()
    assert len(answer.sent_at) == 4
    assert first_at < answer.sent_at[-1] - 0.4  # seen ~0.9 s before the last event was sent
    assert lines[:2] == [b"event: message_start", b"data: " + json.dumps(events[0][1]).encode()]
    assert [d["type"] for d in sse_data(lines)] == [name for name, _ in events[:4]]


def test_anthropic_stream_shapes():
    events = anthropic_stream_events(["a", "b"], usage_start={"input_tokens": 9},
                                     usage_delta={"output_tokens": 4},
                                     extra_events=[error_event()])
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_stop", "error", "message_delta",
                     "message_stop"]
    assert all(data["type"] == name for name, data in events)
    usage = events[0][1]["message"]["usage"]
    assert usage == {"input_tokens": 9, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 0, "output_tokens": 1}
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "a"}
    assert events[-2][1]["usage"] == {"output_tokens": 4}
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"

    tool = tool_use_stream_events("lookup", ['{"q":', ' 1}'], text_chunks=["ok"])
    start = [d for n, d in tool if n == "content_block_start"][1]
    assert start["index"] == 1 and start["content_block"]["name"] == "lookup"
    assert [d["delta"]["partial_json"] for n, d in tool
            if n == "content_block_delta" and d["index"] == 1] == ['{"q":', ' 1}']
    assert tool[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert anthropic_message(stop_reason="max_tokens")["stop_reason"] == "max_tokens"


def test_sse_data_only_frames_and_unchunked(upstream):
    upstream.script(sse_answer([(None, {"choices": []}), (None, "[DONE]")], chunked=False))
    with post(upstream, "/v1/chat/completions", stream=True) as resp:
        assert "transfer-encoding" not in resp.headers
        assert resp.content == b'data: {"choices": []}\n\ndata: [DONE]\n\n'


def test_raw_sse_chunks(upstream):
    chunks = [b"event: message_start\nda", b'ta: {"type": "mess', b'age_start"}\n\n', b"garbage\n\n"]
    upstream.script(raw_sse_answer(chunks, delay=0.05))
    with post(upstream, stream=True) as resp:
        received = list(resp.raw.read_chunked())
    assert received == chunks
    assert b"".join(received).startswith(b'event: message_start\ndata: {"type": "message_start"}')


def test_keep_alive_reuses_connection(upstream):
    upstream.script(json_answer({"n": 1}), sse_answer(anthropic_stream_events()))
    with requests.Session() as session:
        assert session.post(upstream.url + "/v1/messages", json={}, timeout=5).json() == {"n": 1}
        with session.post(upstream.url + "/v1/messages", json={}, stream=True, timeout=5) as resp:
            assert len(list(resp.iter_lines())) > 0
        assert session.get(upstream.url + "/v1/models", timeout=5).status_code == 200
    assert upstream.connections_accepted == 1
    assert len(upstream.requests) == 3


# --------------------------------------------------------------------------- misbehaviour


def test_hang_times_out_client(upstream):
    upstream.script(hang_answer(5), hang_answer(0.2, then=json_answer({"late": True})))
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        post(upstream, timeout=0.5)
    assert time.monotonic() - started < 2
    assert post(upstream).json() == {"late": True}


def test_drop_gives_connection_error(upstream):
    upstream.script(drop_answer(), drop_answer(reset=True))
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            post(upstream)
    assert len(upstream.requests) == 2


def test_sse_then_drop(upstream):
    events = anthropic_stream_events(["a"])[:3]
    upstream.script(sse_then_drop(events, delay=0.05))
    lines = []
    with post(upstream, stream=True) as resp:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for line in resp.iter_lines():
                lines.append(line)
    assert [d["type"] for d in sse_data(lines)] == ["message_start", "content_block_start", "ping"]


def test_sse_then_hang(upstream):
    upstream.script(sse_then_hang(anthropic_stream_events()[:2], seconds=10))
    lines = []
    with post(upstream, stream=True, timeout=(2, 0.5)) as resp:
        with pytest.raises(requests.ConnectionError):  # requests wraps mid-body read timeouts
            for line in resp.iter_lines():
                lines.append(line)
    assert len(sse_data(lines)) == 2
    assert upstream.wait_for_disconnect(2)  # the client closed during the hang


def test_client_disconnect_detected(upstream):
    answer = sse_answer(anthropic_stream_events(["x"] * 10), delay=0.05, delays=[0, 30])
    upstream.script(answer)
    resp = post(upstream, stream=True)
    first = next(resp.iter_lines())
    assert first == b"event: message_start"
    closed_at = time.monotonic()
    resp.close()
    assert upstream.wait_for_disconnect(2)
    assert upstream.disconnects[0] - closed_at < 1
    assert len(answer.sent_at) == 1  # the scripted stream still had 30+ s to go


def test_request_recording(upstream):
    post(upstream, "/v1/messages?beta=true", json={"model": "m", "stream": True},
         headers={"X-Api-Key": "sk-test", "anthropic-version": "2023-06-01"})
    requests.get(upstream.url + "/v1/models", timeout=5)
    requests.post(upstream.url + "/raw", data=iter([b"ab", b"cd"]), timeout=5)  # chunked body
    assert upstream.wait_for_requests(3, timeout=1)
    first, second, third = upstream.requests
    assert (first.method, first.path) == ("POST", "/v1/messages?beta=true")
    assert first.headers["x-api-key"] == "sk-test" and first.headers["Anthropic-Version"]
    assert first.json() == {"model": "m", "stream": True}
    assert (second.method, second.path, second.body) == ("GET", "/v1/models", b"")
    assert third.body == b"abcd"
    assert not upstream.wait_for_requests(4, timeout=0.05)


def test_close_wakes_hangs_promptly():
    up = Upstream().start()
    up.script(hang_answer(30), sse_then_hang(anthropic_stream_events(), 30))
    errors = []

    def call(**kwargs):
        try:
            post(up, timeout=10, **kwargs).content
        except requests.RequestException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call), threading.Thread(target=call, kwargs={"stream": True})]
    for thread in threads:
        thread.start()
    assert up.wait_for_requests(2, timeout=2)
    started = time.monotonic()
    up.close()
    assert time.monotonic() - started < 1.5
    for thread in threads:
        thread.join(2)
    assert len(errors) == 2
    assert not up.client_gone.is_set()  # our own close() is not a client disconnect
    assert not up.errors
