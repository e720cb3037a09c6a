"""What the OpenAI adaptor's tests share: the adaptor and a target, request bodies,
chat.completion answers and streams, and readers for the Anthropic frames that come out."""
from __future__ import annotations

import json

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from app.adaptors.base import Target
from app.adaptors.openai import OpenAIAdaptor, OpenAIStream
from app.errors import InvalidRequest
from app.wire.sse import SSEParser


ADAPTOR = OpenAIAdaptor()
TARGET = Target(base_url="http://127.0.0.1:11434/v1/", api_key="sk-upstream-secret-123456",
                model="qwen3:8b", timeout_s=42.0)
CLIENT_HEADERS = {"x-api-key": "sk-octo-client", "Authorization": "Bearer sk-octo-client",
                  "anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14",
                  "user-agent": "claude-cli/2.1", "Cookie": "a=b"}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def body_of(**fields) -> dict:
    return {"model": "claude-sonnet-4-6", "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi"}], **fields}


def translate(body: dict, target: Target = TARGET) -> dict:
    raw = json.dumps(body).encode()
    request = ADAPTOR.build_request(target, body, raw, CLIENT_HEADERS)
    return json.loads(request.body)


def messages_of(*turns, **fields) -> list[dict]:
    return translate(body_of(messages=list(turns), **fields))["messages"]


def invalid(body: dict) -> str:
    with pytest.raises(InvalidRequest) as info:
        translate(body)
    assert info.value.status == 400 and info.value.error_type == "invalid_request_error"
    return info.value.message


def completion(message: dict, finish_reason="stop", usage=None, **extra) -> bytes:
    payload = {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1, "model": "qwen3:8b",
               "choices": [{"index": 0, "message": {"role": "assistant", **message},
                            "finish_reason": finish_reason, **extra.pop("choice", {})}],
               "usage": usage if usage is not None else {"prompt_tokens": 20, "completion_tokens": 5,
                                                          "total_tokens": 25},
               **extra}
    return json.dumps(payload).encode()


def chunk(delta: dict | None = None, finish_reason=None, usage=None, choices=True, **extra) -> dict:
    payload = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "qwen3:8b",
               "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}] if choices else [],
               **extra}
    if usage is not None:
        payload["usage"] = usage
    return payload


def sse(*payloads, done=True, crlf=False) -> list[bytes]:
    """OpenAI's framing: `data: JSON` and a blank line per chunk, then `data: [DONE]`."""
    end = b"\r\n\r\n" if crlf else b"\n\n"
    frames = [b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + end for p in payloads]
    return frames + ([b"data: [DONE]" + end] if done else [])


USAGE = {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
         "prompt_tokens_details": {"cached_tokens": 10}}


def text_stream(*pieces, usage=USAGE, finish="stop", done=True):
    payloads = [chunk({"role": "assistant", "content": ""})]
    payloads += [chunk({"content": p}) for p in pieces]
    payloads.append(chunk({}, finish_reason=finish))
    if usage is not None:
        payloads.append(chunk(choices=False, usage=usage))
    return sse(*payloads, done=done)


def run(frames: list[bytes], mode: str = "chunks") -> tuple[bytes, OpenAIStream]:
    """Feed the upstream bytes whole-chunk, byte by byte, or as one blob; then finish()."""
    translator = ADAPTOR.translate_stream()
    data = b"".join(frames)
    if mode == "chunks":
        pieces = frames
    elif mode == "bytes":
        pieces = [data[i:i + 1] for i in range(len(data))]
    else:
        pieces = [data]
    out = b"".join(translator.feed(piece) for piece in pieces)
    return out + translator.finish(), translator


def events(out: bytes) -> list[tuple[str, dict]]:
    assert not out or out.endswith(b"\n\n")
    frames = SSEParser().feed(out)
    parsed = [(name, json.loads(data)) for name, data in frames]
    for name, data in parsed:
        assert name == data["type"]  # every frame keeps its event: line, matching its type
    return parsed


def names(out: bytes) -> list[str]:
    return [name for name, _ in events(out)]


def accumulate(out: bytes):
    """What the SDK's MessageStream builds from these events (its own accumulate_event)."""
    snapshot, bufs = None, {}
    for name, data in events(out):
        if name in ("ping", "message_stop"):
            continue
        assert name != "error", data
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def check_sequence(evs: list[tuple[str, dict]]) -> None:
    """Anthropic's grammar: start, ping, then blocks one at a time with consecutive indexes."""
    assert evs[0][0] == "message_start" and evs[1][0] == "ping"
    assert evs[-2][0] == "message_delta" and evs[-1][0] == "message_stop"
    open_index, next_index = None, 0
    for name, data in evs[2:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        else:
            raise AssertionError(name)
    assert open_index is None
