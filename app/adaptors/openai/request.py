"""A Messages API body -> a Chat Completions body: top-level fields, tools, thinking, structured output.

The conversation itself (system text, turns, content blocks) is content.py's.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

from ...errors import InvalidRequest
from ..base import Target
from .content import CHANNEL, convert_turn, system_text

log = logging.getLogger("octorelay.adaptors.openai")

# thinking.budget_tokens -> reasoning_effort (OpenAI o-series, gpt-oss on vLLM,
# Ollama, OpenRouter and DeepSeek accept it): below 4096 low, below 16384 medium.
EFFORT_STEPS = ((4096, "low"), (16384, "medium"))


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
    system = system_text(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    turns = body.get("messages")
    if not isinstance(turns, list):
        raise InvalidRequest("messages: must be a list")
    for i, turn in enumerate(turns):
        messages.extend(convert_turn(turn, f"messages.{i}"))

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

