"""Channel adaptors: pure translation between Anthropic's API and an upstream's, bytes and dicts only.

No Flask, no DB, no network here: the relay service sends what an adaptor
builds and feeds it what comes back. Which channel type uses which adaptor
is said once, in the channel-type registry (app/channel_types/).
"""
from .base import Adaptor, StreamTranslator, Target, Usage, estimate_input_tokens, estimate_tokens

__all__ = ["Adaptor", "StreamTranslator", "Target", "Usage", "estimate_input_tokens", "estimate_tokens"]
