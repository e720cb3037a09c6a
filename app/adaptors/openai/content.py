"""Anthropic conversation content -> Chat Completions messages: system text, turns, blocks.

A block with no OpenAI equivalent is a 400 naming its path, never dropped --
except thinking history, dropped on purpose (see `_DROPPED`).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

from ...errors import InvalidRequest

CHANNEL = "an OpenAI-compatible channel"

# Separators used when several Anthropic text blocks become one OpenAI string.
# Blocks the client wrote (user, system, tool results) are separate pieces of
# text, so they stay apart; an assistant's blocks are the model's own running
# text (split e.g. around citations), so they are glued back as they were.
JOIN_BLOCKS = "\n\n"
JOIN_ASSISTANT = ""


def _blocks(content: Any, path: str) -> list[tuple[Mapping, str]]:
    """A turn's content as (block, path) pairs; a plain string is one text block."""
    if isinstance(content, str):
        return [({"type": "text", "text": content}, f"{path}")]
    if not isinstance(content, list):
        raise InvalidRequest(f"{path}: must be a string or a list of content blocks")
    out: list[tuple[Mapping, str]] = []
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


def system_text(system: Any, path: str) -> str:
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


def convert_turn(turn: Any, path: str) -> list[dict]:
    if not isinstance(turn, Mapping):
        raise InvalidRequest(f"{path}: must be an object")
    role, content = turn.get("role"), turn.get("content")
    if role == "system":
        # A mid-conversation system turn stays where it is, as a system message.
        text = system_text(content, f"{path}.content")
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

