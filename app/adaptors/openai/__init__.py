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

One module a direction: request.py and content.py (up), response.py,
stream.py and errors.py (down); this module is the adaptor that ties them.
"""
from __future__ import annotations

import json
from typing import Mapping

from ...errors import UpstreamError
from ...wire.request import UpstreamRequest
from ..base import Target, Usage, join_url
from .errors import clean_message, translate_error
from .request import to_chat_request
from .response import dumps, to_anthropic_message
from .stream import OpenAIStream

__all__ = ["OpenAIAdaptor", "OpenAIStream", "clean_message", "to_anthropic_message", "to_chat_request",
           "translate_error"]


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
                               dumps(to_chat_request(target, body)), target.timeout_s)

    def translate_response(self, body: bytes) -> tuple[bytes, Usage]:
        try:
            payload = json.loads(body)
            message, usage = to_anthropic_message(payload)
            return dumps(message), usage
        except ValueError:
            raise UpstreamError("the OpenAI-compatible upstream answered with a body that is not JSON") from None
        except RecursionError:
            raise UpstreamError("the OpenAI-compatible upstream answered with JSON nested too deeply") from None

    def translate_stream(self, request: Mapping | None = None) -> OpenAIStream:
        return OpenAIStream(request)

    def translate_error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return translate_error(status, body)
