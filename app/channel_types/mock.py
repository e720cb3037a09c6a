"""The demo channel: Anthropic-shaped answers made up in-process, no upstream at all."""
from ..adaptors.anthropic import AnthropicAdaptor
from ..upstream.mock import MockTransport
from . import ChannelType, register_channel_type

register_channel_type(ChannelType(
    name="mock", label="mock (local demo answers)", adaptor=AnthropicAdaptor(),
    transport=lambda http: MockTransport(), local=True, api_key="unused", count_tokens=True,
    base_url_hint="None: answers locally."))
