"""A chat.completion -> a Messages API message, and the pieces streams share:
usage, stop reasons, ids, tool-call arguments, reasoning text."""
from __future__ import annotations

import json
import secrets
from typing import Any, Mapping

from ...errors import UpstreamError
from ..base import Usage
from .errors import error_text

FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_from(usage: Any) -> Usage | None:
    """OpenAI usage -> Usage, or None if it holds no counts.

    Cached prompt tokens (`prompt_tokens_details.cached_tokens`, or DeepSeek's
    `prompt_cache_hit_tokens`) are part of OpenAI's prompt_tokens but separate
    in Anthropic's usage, so input_tokens = prompt_tokens - cached: the four
    fields still add up to what the upstream processed. OpenAI reports no
    cache writes, so cache_creation_input_tokens is 0.
    """
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    if cached is None:
        cached = _int(usage.get("prompt_cache_hit_tokens"))
    cached = min(cached or 0, prompt)
    return Usage(input_tokens=prompt - cached, output_tokens=completion or 0,
                 cache_creation_input_tokens=0, cache_read_input_tokens=cached)


def usage_json(usage: Usage) -> dict:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens}


def stop_reason_for(finish_reason: Any, vllm_stop: Any = None, used_tools: bool = False
                    ) -> tuple[str, str | None]:
    """OpenAI finish_reason -> (Anthropic stop_reason, stop_sequence).

    OpenAI says "stop" both for a natural end and for a stop sequence, without
    saying which: that stays end_turn. vLLM adds the matched string as the
    choice's `stop_reason`, and then it becomes stop_sequence. Some servers
    (older Ollama) say "stop" after tool calls: with tool calls present that is
    tool_use, which is what Anthropic clients loop on.
    """
    if finish_reason == "stop" and isinstance(vllm_stop, str) and vllm_stop:
        return "stop_sequence", vllm_stop
    reason = FINISH_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    if used_tools and reason == "end_turn":
        reason = "tool_use"
    return reason, None


def new_tool_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def message_id(upstream_id: Any) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return "msg_" + upstream_id.removeprefix("chatcmpl-")
    return "msg_" + secrets.token_hex(12)


def parse_arguments(arguments: Any) -> dict:
    """Tool-call arguments (a JSON string) -> the tool_use input object.

    Invalid JSON, or JSON that is not an object, gives {}: Anthropic's input
    is always an object and clients parse it as one; the raw string is not
    kept (there is no field for it) -- a model that emits broken arguments
    gets an empty input, which the tool then rejects visibly.
    """
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def reasoning_of(obj: Mapping) -> str:
    """DeepSeek and vLLM call it reasoning_content, OpenRouter and newer vLLM reasoning;
    servers sending both send the same text, so the first present one is used."""
    for name in ("reasoning_content", "reasoning"):
        value = obj.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def to_anthropic_message(payload: Any) -> tuple[dict, Usage]:
    if not isinstance(payload, Mapping):
        raise UpstreamError("the OpenAI-compatible upstream answered with JSON that is not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        error = payload.get("error")
        if error:
            raise UpstreamError(f"the OpenAI-compatible upstream reported an error: {error_text(payload) or 'unknown'}")
        raise UpstreamError("the OpenAI-compatible upstream answered without any choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise UpstreamError("the OpenAI-compatible upstream answered a choice without a message")

    content: list[dict] = []
    reasoning = reasoning_of(message)
    if reasoning:
        # No signature exists for it; "" keeps the block well-formed for SDKs.
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _content_text(message.get("content"))
    # A structured-output refusal: OpenAI's `refusal` instead of content is
    # Anthropic's stop_reason "refusal", with the model's words as the text.
    refused = not text and isinstance(message.get("refusal"), str) and bool(message["refusal"])
    if refused:
        text = message["refusal"]
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            if not isinstance(call, Mapping):
                continue
            function = call.get("function")
            if not isinstance(function, Mapping):
                function = {}
            content.append(_tool_use(call.get("id"), function.get("name"), function.get("arguments")))
    legacy = message.get("function_call")  # the pre-tools API some servers still speak
    if isinstance(legacy, Mapping) and not isinstance(calls, list):
        content.append(_tool_use(None, legacy.get("name"), legacy.get("arguments")))

    used_tools = any(block["type"] == "tool_use" for block in content)
    stop_reason, stop_sequence = stop_reason_for(choice.get("finish_reason"), choice.get("stop_reason"),
                                                 used_tools)
    if refused and stop_reason == "end_turn":
        stop_reason = "refusal"
    usage = usage_from(payload.get("usage")) or Usage()
    out = {
        "id": message_id(payload.get("id")),
        "type": "message",
        "role": "assistant",
        "model": payload.get("model") if isinstance(payload.get("model"), str) else "",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_json(usage),
    }
    return out, usage


def _tool_use(call_id: Any, name: Any, arguments: Any) -> dict:
    return {"type": "tool_use", "id": call_id if isinstance(call_id, str) and call_id else new_tool_id(),
            "name": name if isinstance(name, str) else "", "input": parse_arguments(arguments)}


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

