"""Channel adaptors: pure translation between Anthropic's API and an upstream's, bytes and dicts only.

No Flask, no DB, no network here: the relay service sends what an adaptor
builds and feeds it what comes back. `ADAPTORS` maps a wire format to its
adaptor; channel types pick one (a mock channel speaks Anthropic's format).
"""
from .anthropic import AnthropicAdaptor
from .openai import OpenAIAdaptor
from .base import Adaptor, StreamTranslator, Target, Usage, estimate_input_tokens, estimate_tokens

ADAPTORS: dict[str, Adaptor] = {}


def register_adaptor(name: str, adaptor: Adaptor) -> None:
    ADAPTORS[name] = adaptor


register_adaptor("anthropic", AnthropicAdaptor())
register_adaptor("openai", OpenAIAdaptor())

__all__ = ["ADAPTORS", "Adaptor", "StreamTranslator", "Target", "Usage", "estimate_input_tokens",
           "estimate_tokens", "register_adaptor"]
