"""chat.completion.chunk frames -> Anthropic's event stream, event by event as they arrive."""
from __future__ import annotations

import json
from typing import Any, Mapping

from ...errors import UpstreamError
from ...wire.message_events import message_events
from ...wire.sse import SSEParser, frame
from ..base import Usage, estimate_input_tokens, estimate_tokens
from .errors import clean_message, error_text, error_type_in_stream
from .response import (
    message_id,
    new_tool_id,
    reasoning_of,
    stop_reason_for,
    to_anthropic_message,
    usage_from,
    usage_json,
)

# A "stream" that is really one JSON body (a server or proxy that ignored
# stream: true) is kept up to this size to be translated whole at the end.
MAX_UNFRAMED = 16 * 1024 * 1024


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
        message: dict[str, Any] = {"id": message_id(payload.get("id")), "type": "message", "role": "assistant",
                   "model": payload.get("model") if isinstance(payload.get("model"), str) else "",
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": usage_json(self.usage)}
        return (frame("message_start", {"type": "message_start", "message": message})
                + frame("ping", {"type": "ping"}))

    def _on_choice(self, choice: Mapping) -> list[bytes]:
        out: list[bytes] = []
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            delta = {}
        reasoning = reasoning_of(delta)
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
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = {}
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
        self.output_chars += sum(map(_chars, message["content"]))
        start_usage = usage_json(self.usage)
        if not self.usage_final:
            self.usage.output_tokens = estimate_tokens(self.output_chars)
        events = message_events({**message, "usage": usage_json(self.usage)}, start_usage=start_usage)
        out = [frame(*next(events)), frame("ping", {"type": "ping"})]  # ping where _start() puts it
        out.extend(frame(name, data) for name, data in events)
        return b"".join(out)

    def _fail(self, error: Any) -> bytes:
        self._done = True
        message = error_text({"error": error}) if isinstance(error, (Mapping, str)) else ""
        return self._error_frame(error_type_in_stream(error),
                                 clean_message(message) or "the upstream reported an error")

    def _error_frame(self, error_type: str, message: str) -> bytes:
        self.error_type = error_type
        return frame("error", {"type": "error", "error": {"type": error_type, "message": message}})


def _chars(block: dict) -> int:
    """A block's share of the output estimate: its text, or its tool input as the
    upstream would have streamed the arguments (json.dumps' default spacing)."""
    if block["type"] == "tool_use":
        return len(json.dumps(block["input"], ensure_ascii=False))
    return len(block.get("text") or block.get("thinking") or "")
