"""OpenAI-compatible Chat Completions upstreams (vLLM, Ollama, OpenRouter, DeepSeek, Azure, gateways).

Pure translation, both ways, so that an Anthropic client never notices:

- `to_chat_request`: a Messages API body -> a Chat Completions body;
- `to_anthropic_message`: a chat.completion -> a Messages API message;
- `OpenAIStream`: `data:` chunks of a chat.completion.chunk stream -> Anthropic's
  exact event sequence, event by event as the chunks arrive;
- `translate_error`: an upstream error answer -> Anthropic's error shape.

Where the two APIs differ, the choice made is written next to the code.
Nothing is silently lost on the way up: a block or tool with no OpenAI
equivalent is a 400 naming its path, never dropped -- except the few things
that are dropped on purpose and say why (thinking history, top_k, cache_control,
unknown top-level fields).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
from typing import Any, Mapping

from ..errors import InvalidRequest, UpstreamError, error_type_for
from ..wire.sse import SSEParser, frame
from ..wire.request import UpstreamRequest
from .base import Target, Usage, estimate_input_tokens, estimate_tokens, join_url

log = logging.getLogger("octorelay.adaptors.openai")

CHANNEL = "an OpenAI-compatible channel"

# Separators used when several Anthropic text blocks become one OpenAI string.
# Blocks the client wrote (user, system, tool results) are separate pieces of
# text, so they stay apart; an assistant's blocks are the model's own running
# text (split e.g. around citations), so they are glued back as they were.
JOIN_BLOCKS = "\n\n"
JOIN_ASSISTANT = ""

# thinking.budget_tokens -> reasoning_effort (OpenAI o-series, gpt-oss on vLLM,
# Ollama, OpenRouter and DeepSeek accept it): below 4096 low, below 16384 medium.
EFFORT_STEPS = ((4096, "low"), (16384, "medium"))

FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Upstream HTTP status -> Anthropic error type (translate_error). 502 and 503
# from an OpenAI-compatible server mean "the model behind me is down or busy"
# (OpenRouter, vLLM behind a proxy), which Anthropic calls overloaded_error;
# clients retry both alike.
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",  # FastAPI/vLLM validation errors; sent to the client as 400
    429: "rate_limit_error",
    500: "api_error",
    502: "overloaded_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STATUS_REWRITES = {422: 400}
DEFAULT_MESSAGES = {
    400: "the upstream rejected the request",
    401: "the upstream rejected the channel's credentials",
    403: "the upstream refused the channel access",
    404: "the upstream does not know this model or route",
    413: "the request is too large for the upstream",
    422: "the upstream rejected the request",
    429: "the upstream is rate limiting this channel",
    500: "the upstream failed",
    502: "the upstream's model is unavailable",
    503: "the upstream is overloaded",
    504: "the upstream timed out",
}
MAX_ERROR_MESSAGE = 1000
# A "stream" that is really one JSON body (a server or proxy that ignored
# stream: true) is kept up to this size to be translated whole at the end.
MAX_UNFRAMED = 16 * 1024 * 1024
# Anything shaped like a credential in an upstream's error text is masked before
# it reaches the client (some gateways echo the key they were sent).
_SECRET = re.compile(r"\b((?:sk|rk)-[A-Za-z0-9]{0,4})[A-Za-z0-9_\-*.]{8,}|(?i:\b(bearer)\s+)[^\s\"',]+")


# =========================================================================== request


def to_chat_request(target: Target, body: Mapping) -> dict:
    """A Messages API body -> a Chat Completions body for `target.model`.

    Only fields with an OpenAI meaning are sent: OpenAI-compatible servers
    reject unknown fields, so unknown top-level Anthropic fields (and
    `context_management`, `output_config.effort`, `service_tier`, `container`,
    `mcp_servers`...) are dropped rather than failing the request.
    `top_k` does not exist in OpenAI's API and is dropped too. Structured
    output (`output_config.format`) is never dropped: see `response_format`.
    """
    messages: list[dict] = []
    system = _system_text(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    turns = body.get("messages")
    if not isinstance(turns, list):
        raise InvalidRequest("messages: must be a list")
    for i, turn in enumerate(turns):
        messages.extend(_convert_turn(turn, f"messages.{i}"))

    out: dict[str, Any] = {"model": target.model, "messages": messages}
    # `max_tokens`, not `max_completion_tokens`: the newer name is OpenAI-only
    # (required by its o-series), while vLLM, Ollama, llama.cpp, DeepSeek and
    # older gateways all read `max_tokens`; it is the widest-compatible choice.
    if "max_tokens" in body:
        out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop_sequences")
    if isinstance(stop, list) and stop:
        out["stop"] = list(stop)
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
        out["user"] = metadata["user_id"]

    tools = _tools(body.get("tools"))
    if tools:
        # tool_choice and parallel_tool_calls are refused by OpenAI without
        # `tools`, so they are only sent alongside them.
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping):
            out.update(_tool_choice(choice))

    effort = reasoning_effort(body.get("thinking"))
    if effort:
        out["reasoning_effort"] = effort
    structured = response_format(body)
    if structured:
        out["response_format"] = structured
    if body.get("stream") is True:
        # Without include_usage an OpenAI stream carries no token counts at all.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def reasoning_effort(thinking: Any) -> str | None:
    """Anthropic's `thinking` -> OpenAI's `reasoning_effort` ("low"/"medium"/"high"), or None.

    An exact token budget has no OpenAI counterpart, so it is bucketed.
    `adaptive` (the model decides; Claude Code sends it on every turn) is
    dropped: servers refuse `reasoning_effort` for models that do not reason
    (gpt-4o, most local models), and leaving it out lets a reasoning model use
    its own default. `disabled` sends nothing either.
    """
    if not isinstance(thinking, Mapping):
        return None
    kind = thinking.get("type")
    if kind == "adaptive":
        _note_once("thinking.type=adaptive is not sent to OpenAI-compatible channels "
                   "(the server's default reasoning applies)")
        return None
    if kind != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return "medium"
    for limit, effort in EFFORT_STEPS:
        if budget < limit:
            return effort
    return "high"


# OpenAI's rule for response_format.json_schema.name
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def response_format(body: Mapping) -> dict | None:
    """Anthropic's structured output -> Chat Completions' `response_format`, or None.

    `output_config.format` (or the older beta's top-level `output_format`),
    `{"type": "json_schema", "schema": S}`, becomes `{"type": "json_schema",
    "json_schema": {"name": N, "schema": S, "strict": B}}`; the answer comes
    back as the message's text, which is what Anthropic returns and what the
    SDKs' `messages.parse` reads. OpenAI requires a name Anthropic does not
    have: the schema's `title` when it fits OpenAI's pattern, else "response".
    Anthropic guarantees the schema; OpenAI only in strict mode, which it
    refuses for schemas outside its subset, so `strict` is true exactly when
    the schema is inside it (`strict_schema`) and false otherwise (the model
    is still asked for that schema). A format that cannot be expressed is a
    400, never dropped.
    """
    config = body.get("output_config")
    path, spec = "output_config.format", config.get("format") if isinstance(config, Mapping) else None
    if spec is None and body.get("output_format") is not None:
        path, spec = "output_format", body.get("output_format")
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidRequest(f"{path}: must be an object")
    if spec.get("type") != "json_schema":
        raise InvalidRequest(f"{path}.type: {spec.get('type')!r} cannot be sent to {CHANNEL} "
                             "(only 'json_schema' can)")
    schema = spec.get("schema")
    if not isinstance(schema, Mapping):
        raise InvalidRequest(f"{path}.schema: required, a JSON schema object")
    title = schema.get("title")
    name = title if isinstance(title, str) and _SCHEMA_NAME.fullmatch(title) else "response"
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": dict(schema), "strict": strict_schema(schema)}}


def strict_schema(schema: Mapping) -> bool:
    """Whether OpenAI's strict mode accepts `schema`: every object in it closed
    (`additionalProperties: false`) and listing all its properties as required.
    A loop, not recursion: schemas come from clients and may nest deeply."""
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, Mapping):
            continue
        properties = node.get("properties")
        if node.get("type") == "object" or isinstance(properties, Mapping):
            if node.get("additionalProperties") is not False:
                return False
            required = node.get("required")
            names = set(properties) if isinstance(properties, Mapping) else set()
            if not isinstance(required, list) or set(map(str, required)) != names:
                return False
        pending.extend(node.values())
    return True


_noted: set[str] = set()


def _note_once(message: str) -> None:
    if message not in _noted:
        _noted.add(message)
        log.info(message)


def _tool_choice(choice: Mapping) -> dict:
    kind = choice.get("type")
    out: dict[str, Any]
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "none":
        out = {"tool_choice": "none"}
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice.name: required when tool_choice.type is 'tool'")
        out = {"tool_choice": {"type": "function", "function": {"name": name}}}
    else:
        raise InvalidRequest(f"tool_choice.type: {kind!r} cannot be sent to {CHANNEL}")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def _tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list):
        return []
    out = []
    for n, tool in enumerate(tools):
        path = f"tools.{n}"
        if not isinstance(tool, Mapping):
            raise InvalidRequest(f"{path}: must be an object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            # web_search_*, bash_*, text_editor_*, code_execution_*, computer_*...:
            # Anthropic runs (or defines) these itself; an OpenAI server cannot.
            raise InvalidRequest(f"{path}: the Anthropic server tool {kind!r} cannot be used through {CHANNEL}")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{path}.name: required")
        function: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str) and tool["description"]:
            function["description"] = tool["description"]
        schema = tool.get("input_schema")
        # cache_control, defer_loading, input_examples...: Anthropic-only, dropped.
        function["parameters"] = dict(schema) if isinstance(schema, Mapping) else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def _blocks(content: Any, path: str) -> list[tuple[dict, str]]:
    """A turn's content as (block, path) pairs; a plain string is one text block."""
    if isinstance(content, str):
        return [({"type": "text", "text": content}, f"{path}")]
    if not isinstance(content, list):
        raise InvalidRequest(f"{path}: must be a string or a list of content blocks")
    out = []
    for k, block in enumerate(content):
        if not isinstance(block, Mapping):
            raise InvalidRequest(f"{path}.{k}: must be an object")
        out.append((block, f"{path}.{k}"))
    return out


def _text_of(block: Mapping, path: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{path}.text: must be a string")
    return text


# thinking / redacted_thinking blocks in the history are dropped wherever they
# appear: they only mean something to Anthropic (signed, often encrypted), no
# OpenAI-compatible server accepts them as input, and reasoning models there
# do not expect their earlier reasoning back (DeepSeek even rejects it).
_DROPPED = frozenset({"thinking", "redacted_thinking"})


def _system_text(system: Any, path: str) -> str:
    if system is None:
        return ""
    pieces = []
    for block, bpath in _blocks(system, path):
        kind = block.get("type")
        if kind in _DROPPED:
            continue
        if kind != "text":
            raise InvalidRequest(f"{bpath}: {kind!r} blocks cannot be sent as system text to {CHANNEL}")
        pieces.append(_text_of(block, bpath))  # cache_control is Anthropic-only: dropped
    return JOIN_BLOCKS.join(pieces)


def _convert_turn(turn: Any, path: str) -> list[dict]:
    if not isinstance(turn, Mapping):
        raise InvalidRequest(f"{path}: must be an object")
    role, content = turn.get("role"), turn.get("content")
    if role == "system":
        # A mid-conversation system turn stays where it is, as a system message.
        text = _system_text(content, f"{path}.content")
        return [{"role": "system", "content": text}] if text else []
    if role == "assistant":
        return _assistant_turn(content, f"{path}.content")
    if role == "user":
        return _user_turn(content, f"{path}.content")
    raise InvalidRequest(f"{path}.role: {role!r} is not one of user, assistant, system")


def _assistant_turn(content: Any, path: str) -> list[dict]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
    texts, calls = [], []
    for block, bpath in _blocks(content, path):
        kind = block.get("type")
        if kind == "text":
            texts.append(_text_of(block, bpath))
        elif kind == "tool_use":
            calls.append(_tool_call(block, bpath))
        elif kind in _DROPPED:
            continue
        else:
            raise InvalidRequest(f"{bpath}: {kind!r} blocks in an assistant turn cannot be sent to {CHANNEL}")
    if not texts and not calls:
        return []  # e.g. a turn that held only thinking
    message: dict[str, Any] = {"role": "assistant", "content": JOIN_ASSISTANT.join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tool_call(block: Mapping, path: str) -> dict:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{path}.id: required")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{path}.name: required")
    if arguments is None:
        arguments = {}
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _user_turn(content: Any, path: str) -> list[dict]:
    """Tool results first (OpenAI wants `tool` messages right after the assistant's
    tool_calls), in order; then one user message with the rest of the turn."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict] = []
    tool_images: list[dict] = []
    parts: list[dict] = []
    for block, bpath in _blocks(content, path):
        kind = block.get("type")
        if kind == "tool_result":
            tool_messages.append(_tool_message(block, bpath, tool_images))
        elif kind in _DROPPED:
            continue
        elif kind == "tool_use":
            raise InvalidRequest(f"{bpath}: tool_use blocks belong in assistant turns")
        else:
            parts.extend(_user_parts(block, bpath))
    parts = tool_images + parts
    if not parts:
        return tool_messages
    return tool_messages + [{"role": "user", "content": _collapse(parts)}]


def _collapse(parts: list[dict]) -> str | list[dict]:
    """Text only -> one string (every server accepts that); otherwise the parts list."""
    if all(part["type"] == "text" for part in parts):
        return JOIN_BLOCKS.join(part["text"] for part in parts)
    return parts


def _tool_message(block: Mapping, path: str, tool_images: list[dict]) -> dict:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{path}.tool_use_id: required")
    content = block.get("content")
    texts: list[str] = []
    images: list[dict] = []
    if isinstance(content, str):
        texts.append(content)
    elif content is not None:
        for sub, spath in _blocks(content, f"{path}.content"):
            for part in _user_parts(sub, spath):
                (texts.append(part["text"]) if part["type"] == "text" else images.append(part))
    text = JOIN_BLOCKS.join(texts)
    if images:
        # A `tool` message can only carry text in Chat Completions, so images a
        # tool returned travel in the user message that follows the tool
        # messages, introduced by a line that ties them to their call.
        tool_images.append({"type": "text", "text": f"Images returned by tool call {call_id}:"})
        tool_images.extend(images)
        text = text or "(the tool returned images; they follow in the next message)"
    if block.get("is_error") is True:
        # OpenAI has no error flag on tool results; the model learns the call
        # failed from the text itself, which is what Anthropic's flag conveys.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _user_parts(block: Mapping, path: str) -> list[dict]:
    """One user-side content block (user turn or inside a tool result) -> OpenAI content parts."""
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text", "text": _text_of(block, path)}]
    if kind == "image":
        return [_image_part(block, path)]
    if kind == "document":
        return _document_parts(block, path)
    raise InvalidRequest(f"{path}: content blocks of type {kind!r} cannot be sent to {CHANNEL}")


def _image_part(block: Mapping, path: str) -> dict:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise InvalidRequest(f"{path}.source: required")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise InvalidRequest(f"{path}.source: base64 images need media_type and data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(f"{path}.source.url: required")
        return {"type": "image_url", "image_url": {"url": url}}
    # "file" (Anthropic's Files API) and anything newer: the upstream cannot fetch it.
    raise InvalidRequest(f"{path}.source: image blocks of type {kind!r} cannot be sent to {CHANNEL}")


def _document_parts(block: Mapping, path: str) -> list[dict]:
    """Plain-text documents become text; PDFs, URLs and files cannot be sent."""
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise InvalidRequest(f"{path}.source: required")
    kind, media_type = source.get("type"), source.get("media_type")
    if kind == "text" and isinstance(source.get("data"), str):
        return [{"type": "text", "text": source["data"]}]
    if kind == "base64" and media_type == "text/plain" and isinstance(source.get("data"), str):
        try:
            raw = base64.b64decode(source["data"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"{path}.source.data: not valid base64") from None
        return [{"type": "text", "text": raw.decode("utf-8", "replace")}]
    if kind == "content":
        inner = source.get("content")
        parts = []
        for sub, spath in _blocks(inner if inner is not None else [], f"{path}.source.content"):
            parts.extend(_user_parts(sub, spath))
        return parts
    described = " ".join(str(x) for x in (kind, media_type) if x)
    raise InvalidRequest(f"{path}: document blocks of type {described} cannot be sent to {CHANNEL}")


# =========================================================================== response


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


def _reasoning_of(obj: Mapping) -> str:
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
            raise UpstreamError(f"the OpenAI-compatible upstream reported an error: {_error_text(payload) or 'unknown'}")
        raise UpstreamError("the OpenAI-compatible upstream answered without any choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise UpstreamError("the OpenAI-compatible upstream answered a choice without a message")

    content: list[dict] = []
    reasoning = _reasoning_of(message)
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
            function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
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


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# =========================================================================== errors


def _error_text(payload: Any) -> str:
    """The human message in the many error shapes OpenAI-compatible servers use."""
    if not isinstance(payload, Mapping):
        return ""
    error = payload.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):  # Ollama: {"error": "model 'x' not found"}
        return error
    if isinstance(payload.get("message"), str):
        return payload["message"]
    detail = payload.get("detail")  # FastAPI validation errors (vLLM 422)
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        pieces = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(x) for x in item.get("loc") or [])
                pieces.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        return "; ".join(pieces)
    return ""


def clean_message(message: str) -> str:
    message = _SECRET.sub(lambda m: (m.group(1) + "…") if m.group(1) else f"{m.group(2)} …", message)
    message = message.strip()
    return message if len(message) <= MAX_ERROR_MESSAGE else message[:MAX_ERROR_MESSAGE] + "…"


def error_type_in_stream(error: Any) -> str:
    """An error object sent inside a stream -> Anthropic error type.

    An HTTP status in `code` or `status`, as a number (OpenRouter: 429) or a
    string of digits (LiteLLM and other gateways: "429"), decides; otherwise
    the words in `type`, `code` and `status` ("rate_limit_exceeded",
    "RESOURCE_EXHAUSTED", "server_error") are matched to the nearest Anthropic type.
    """
    if not isinstance(error, Mapping):
        return "api_error"
    for name in ("code", "status"):
        status = _http_status(error.get(name))
        if status is not None:
            return STATUS_TYPES.get(status) or error_type_for(status)
    words = " ".join(str(error.get(k) or "") for k in ("type", "code", "status")).lower()
    for needle, kind in (("rate_limit", "rate_limit_error"), ("quota", "rate_limit_error"),
                         ("resource_exhausted", "rate_limit_error"), ("too_many_requests", "rate_limit_error"),
                         ("overload", "overloaded_error"), ("capacity", "overloaded_error"),
                         ("unavailable", "overloaded_error"),
                         ("timeout", "timeout_error"), ("auth", "authentication_error"),
                         ("api_key", "authentication_error"), ("permission", "permission_error"),
                         ("not_found", "not_found_error"), ("invalid_request", "invalid_request_error"),
                         ("context_length", "invalid_request_error"), ("bad_request", "invalid_request_error")):
        if needle in words:
            return kind
    return "api_error"


def _http_status(value: Any) -> int | None:
    """429 or "429" -> 429; anything that is not an HTTP error status -> None."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) == 3:
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
        return value
    return None


def translate_error(status: int, body: bytes) -> tuple[int, bytes]:
    error_type = STATUS_TYPES.get(status) or error_type_for(status)
    try:
        payload = json.loads(body) if body else None
        message = _error_text(payload)
    except (ValueError, RecursionError):
        # Not JSON: a short plain-text answer is worth showing, a proxy's HTML page is not.
        text = body.decode("utf-8", "replace").strip()
        message = text if text and len(text) <= 300 and not text.startswith("<") else ""
    message = clean_message(message) or DEFAULT_MESSAGES.get(status) or f"the upstream answered HTTP {status}"
    out = {"type": "error", "error": {"type": error_type, "message": message}}
    return STATUS_REWRITES.get(status, status), _dumps(out)


# =========================================================================== stream


class OpenAIStream:
    """chat.completion.chunk `data:` frames in, Anthropic SSE frames out, as they arrive.

    Blocks follow Anthropic's order: one open at a time; a change of kind
    (thinking -> text -> tool call -> next tool call) closes the open block
    and starts the next index. Tool-call fragments are keyed by their
    `index`. Servers stream each call's fragments before the next call's; if
    one ever sends a fragment for a call whose block was already closed, it
    is still sent, as an input_json_delta at that call's own block index
    (the SDK accumulates deltas by index, so the input stays complete)
    rather than being lost.

    Usage: OpenAI reports it last (or never, on servers that ignore
    `stream_options.include_usage`), Anthropic's clients read the input count
    from `message_start` (some only there). So `request`, the client's body,
    gives the relay's own estimate of the input (`estimate_input_tokens`),
    which `message_start` carries; the closing `message_delta` carries the
    upstream's real counts when they came, which the SDKs merge over it, or
    else the estimates, which are then what is billed (`usage_final` False).
    """

    def __init__(self, request: Mapping | None = None):
        self.input_estimate = estimate_input_tokens(request) if request else 0
        self.usage = Usage(input_tokens=self.input_estimate)
        self.usage_final = False
        self.output_chars = 0
        self.error_type: str | None = None
        self._parser = SSEParser()
        self._unframed: bytearray | None = bytearray()  # the body, until a frame proves it is SSE
        self._started = False
        self._done = False
        self._next_index = 0
        self._open: tuple[str, Any] | None = None  # ("text"|"thinking", block index) or ("tool", key)
        self._tools: dict[Any, dict] = {}
        self._last_tool: Any = None
        self._aliases: dict[Any, Any] = {}  # OpenAI index -> the call it now means
        self._finish_reason: Any = None
        self._vllm_stop: Any = None
        self._refused = False

    # --------------------------------------------------------------- protocol

    def feed(self, chunk: bytes) -> bytes:
        if self._unframed is not None:
            self._unframed += chunk
            if len(self._unframed) > MAX_UNFRAMED:
                self._unframed = None
        return b"".join(self._on_frame(event, data) for event, data in self._parser.feed(chunk))

    def finish(self) -> bytes:
        out = [self._on_frame(event, data) for event, data in self._parser.flush()]
        if not self._started and not self._done and self._unframed:
            out.append(self._unframed_answer(bytes(self._unframed)))
        out.append(self._end())
        return b"".join(out)

    # --------------------------------------------------------------- frames

    def _on_frame(self, event: str | None, data: str) -> bytes:
        if self._done:
            return b""
        if data.strip() == "[DONE]":
            return self._end()
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            return b""  # keep-alives and junk between chunks
        if not isinstance(payload, dict):
            return b""
        self._unframed = None
        if payload.get("error") or event == "error":
            return self._fail(payload.get("error") or payload)
        out = []
        self._take_usage(payload.get("usage"))
        if not self._started:
            out.append(self._start(payload))
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:  # n > 1: only the first
                out.extend(self._on_choice(choice))
        return b"".join(out)

    def _take_usage(self, raw: Any) -> None:
        usage = usage_from(raw)
        if usage is None:
            return
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            setattr(self.usage, name, getattr(usage, name))
        self.usage_final = True

    def _start(self, payload: Mapping) -> bytes:
        self._started = True
        # Input tokens are rarely known yet (OpenAI sends usage last): the
        # estimate here, the real numbers in message_delta, merged over it.
        message = {"id": message_id(payload.get("id")), "type": "message", "role": "assistant",
                   "model": payload.get("model") if isinstance(payload.get("model"), str) else "",
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": usage_json(self.usage)}
        return (frame("message_start", {"type": "message_start", "message": message})
                + frame("ping", {"type": "ping"}))

    def _on_choice(self, choice: Mapping) -> list[bytes]:
        out: list[bytes] = []
        delta = choice.get("delta") if isinstance(choice.get("delta"), Mapping) else {}
        reasoning = _reasoning_of(delta)
        if reasoning:
            out.extend(self._block_text("thinking", reasoning))
        text = delta.get("content")
        if isinstance(text, str) and text:
            out.extend(self._block_text("text", text))
        refusal = delta.get("refusal")  # structured output declined: text, and stop_reason "refusal"
        if isinstance(refusal, str) and refusal:
            self._refused = True
            out.extend(self._block_text("text", refusal))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, Mapping):
                    out.extend(self._tool_fragment(call, position))
        legacy = delta.get("function_call")
        if isinstance(legacy, Mapping):
            out.extend(self._tool_fragment({"index": "function_call", "function": legacy}, 0))
        finish = choice.get("finish_reason")
        if finish:
            out.extend(self._close_open())
            self._finish_reason, self._vllm_stop = finish, choice.get("stop_reason")
        return out

    # --------------------------------------------------------------- blocks

    def _open_block(self, content_block: dict) -> tuple[int, bytes]:
        index = self._next_index
        self._next_index += 1
        return index, frame("content_block_start",
                            {"type": "content_block_start", "index": index, "content_block": content_block})

    def _block_text(self, kind: str, text: str) -> list[bytes]:
        out = []
        if self._open is None or self._open[0] != kind:
            out.extend(self._close_open())
            block = {"type": "text", "text": ""} if kind == "text" else \
                {"type": "thinking", "thinking": "", "signature": ""}
            index, start = self._open_block(block)
            self._open = (kind, index)
            out.append(start)
        delta = {"type": "text_delta", "text": text} if kind == "text" else \
            {"type": "thinking_delta", "thinking": text}
        out.append(frame("content_block_delta", {"type": "content_block_delta", "index": self._open[1],
                                                 "delta": delta}))
        self.output_chars += len(text)
        return out

    def _tool_key(self, call: Mapping, position: int) -> Any:
        """Which call a fragment belongs to: its `index`, as OpenAI specifies."""
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        index = call.get("index")
        if isinstance(index, (int, str)) and not isinstance(index, bool):
            key = self._aliases.get(index, index)
            tool = self._tools.get(key)
            if call_id and tool is not None and tool["id"] and tool["id"] != call_id:
                # A new id at a used index (some servers number every call 0):
                # a new call, and the index's later id-less fragments are its.
                key = self._aliases[index] = ("id", call_id)
            return key
        # No index (a few servers): a known id continues its call, a new id is a
        # new call; with neither, the latest call continues.
        if call_id:
            for key, tool in self._tools.items():
                if tool["id"] == call_id:
                    return key
            return ("id", call_id)
        return self._last_tool if self._last_tool is not None else position

    def _tool_fragment(self, call: Mapping, position: int) -> list[bytes]:
        key = self._tool_key(call, position)
        self._last_tool = key
        tool = self._tools.get(key)
        if tool is None:
            tool = self._tools[key] = {"id": None, "name": None, "block": None, "pending": ""}
        function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
        if isinstance(call.get("id"), str) and call["id"] and not tool["id"]:
            tool["id"] = call["id"]
        if isinstance(function.get("name"), str) and function["name"] and not tool["name"]:
            tool["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):  # a few servers send an object, not a string
            arguments = json.dumps(arguments, ensure_ascii=False)
        arguments = arguments if isinstance(arguments, str) else ""
        self.output_chars += len(arguments)

        out: list[bytes] = []
        if tool["block"] is None:
            if tool["name"] is None:
                tool["pending"] += arguments  # content_block_start needs the name: wait for it
                return out
            out.extend(self._start_tool(key, tool))
            arguments, tool["pending"] = tool["pending"] + arguments, ""
        if arguments:
            out.append(frame("content_block_delta", {
                "type": "content_block_delta", "index": tool["block"],
                "delta": {"type": "input_json_delta", "partial_json": arguments}}))
        return out

    def _start_tool(self, key: Any, tool: dict) -> list[bytes]:
        out = self._close_open()
        tool["id"] = tool["id"] or new_tool_id()
        index, start = self._open_block({"type": "tool_use", "id": tool["id"],
                                         "name": tool["name"] or "", "input": {}})
        tool["block"] = index
        self._open = ("tool", key)
        out.append(start)
        return out

    def _close_open(self) -> list[bytes]:
        if self._open is None:
            return []
        kind, ref = self._open
        self._open = None
        index = self._tools[ref]["block"] if kind == "tool" else ref
        out = []
        if kind == "thinking":
            # Anthropic closes every thinking block with its signature; there is
            # none here, and "" is what the SDK then stores.
            out.append(frame("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": "signature_delta", "signature": ""}}))
        out.append(frame("content_block_stop", {"type": "content_block_stop", "index": index}))
        return out

    # --------------------------------------------------------------- endings

    def _end(self) -> bytes:
        """[DONE], or the upstream ended without it: close whatever is still open."""
        if self._done:
            return b""
        self._done = True
        if not self._started:
            return self._error_frame("api_error", "the upstream ended the stream without sending a response")
        out = []
        for key, tool in self._tools.items():  # calls whose name never came: still delivered
            if tool["block"] is None:
                out.extend(self._start_tool(key, tool))
                if tool["pending"]:
                    out.append(frame("content_block_delta", {
                        "type": "content_block_delta", "index": tool["block"],
                        "delta": {"type": "input_json_delta", "partial_json": tool["pending"]}}))
        out.extend(self._close_open())
        stop_reason, stop_sequence = stop_reason_for(self._finish_reason, self._vllm_stop, bool(self._tools))
        if self._refused and stop_reason == "end_turn":
            stop_reason = "refusal"
        if self.usage_final:
            usage = usage_json(self.usage)
        else:
            # No usage chunk (a server ignoring stream_options): the input
            # estimate stands and the output is estimated from what was forwarded.
            self.usage.output_tokens = max(self.usage.output_tokens, estimate_tokens(self.output_chars))
            usage = usage_json(self.usage)
        out.append(frame("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                           "usage": usage}))
        out.append(frame("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _unframed_answer(self, raw: bytes) -> bytes:
        """The upstream ignored `stream: true` and sent one chat.completion (or an
        error) as plain JSON: replay it as the event sequence the client asked for."""
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            return b""  # _end() reports the empty stream
        if isinstance(payload, dict) and payload.get("error"):
            return self._fail(payload["error"])
        try:
            message, usage = to_anthropic_message(payload)
        except UpstreamError:
            return b""
        self._done = True
        self.usage_final = usage_from(payload.get("usage")) is not None
        if self.usage_final:
            for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                setattr(self.usage, name, getattr(usage, name))
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": usage_json(self.usage)}
        out = [frame("message_start", {"type": "message_start", "message": start}), frame("ping", {"type": "ping"})]
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                empty, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"]}]
                self.output_chars += len(block["text"])
            elif block["type"] == "thinking":
                empty = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                          {"type": "signature_delta", "signature": ""}]
                self.output_chars += len(block["thinking"])
            else:
                arguments = json.dumps(block["input"], ensure_ascii=False)
                empty, deltas = {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": arguments}]
                self.output_chars += len(arguments)
            out.append(frame("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": empty}))
            out.extend(frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                       for d in deltas)
            out.append(frame("content_block_stop", {"type": "content_block_stop", "index": index}))
        if not self.usage_final:
            self.usage.output_tokens = estimate_tokens(self.output_chars)
        usage_out = usage_json(self.usage)
        out.append(frame("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": message["stop_reason"],
                                                     "stop_sequence": message["stop_sequence"]},
                                           "usage": usage_out}))
        out.append(frame("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _fail(self, error: Any) -> bytes:
        self._done = True
        message = _error_text({"error": error}) if isinstance(error, (Mapping, str)) else ""
        return self._error_frame(error_type_in_stream(error), clean_message(message) or "the upstream reported an error")

    def _error_frame(self, error_type: str, message: str) -> bytes:
        self.error_type = error_type
        return frame("error", {"type": "error", "error": {"type": error_type, "message": message}})


# =========================================================================== adaptor


class OpenAIAdaptor:
    def build_request(self, target: Target, body: dict, raw: bytes, headers: Mapping,
                      *, count_tokens: bool = False) -> UpstreamRequest:
        """Client headers are never forwarded: the upstream sees only our own."""
        if count_tokens:
            raise ValueError("OpenAI-compatible channels have no count_tokens endpoint; "
                             "the relay answers count_tokens locally for them")
        stream = body.get("stream") is True
        out_headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "accept-encoding": "identity",
        }
        if target.api_key:
            out_headers["authorization"] = f"Bearer {target.api_key}"
        return UpstreamRequest(join_url(target.base_url, "/chat/completions"), out_headers,
                               _dumps(to_chat_request(target, body)), target.timeout_s)

    def translate_response(self, body: bytes) -> tuple[bytes, Usage]:
        try:
            payload = json.loads(body)
            message, usage = to_anthropic_message(payload)
            return _dumps(message), usage
        except ValueError:
            raise UpstreamError("the OpenAI-compatible upstream answered with a body that is not JSON") from None
        except RecursionError:
            raise UpstreamError("the OpenAI-compatible upstream answered with JSON nested too deeply") from None

    def translate_stream(self, request: Mapping | None = None) -> OpenAIStream:
        return OpenAIStream(request)

    def translate_error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return translate_error(status, body)
