"""OpenAI chat-completion answers (whole and streamed) for an `openai` channel on the scripted upstream."""
from __future__ import annotations

from tests.support.upstream import sse_answer

MODEL = "llama-3.3-70b"


def completion(text="Hello from llama", usage=None, tool_calls=None, finish="stop"):
    message = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}}


def chunk(delta=None, finish=None, usage=None, choices=True):
    body = {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        body["usage"] = usage
    return (None, body)


def text_stream(parts, usage=True):
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in parts]
    events.append(chunk({}, finish="stop"))
    if usage:
        events.append(chunk(choices=False, usage={"prompt_tokens": 40, "completion_tokens": 9,
                                                  "prompt_tokens_details": {"cached_tokens": 30}}))
    return events


def done(events):
    return sse_answer(events + [(None, "[DONE]")])
