"""Anthropic's own API: requests pass through as they are."""
from ..adaptors.anthropic import AnthropicAdaptor
from . import ChannelType, register_channel_type, shared_http

register_channel_type(ChannelType(
    name="anthropic", label="anthropic (Anthropic's API)", adaptor=AnthropicAdaptor(), transport=shared_http,
    default_base_url=lambda options: "https://api.anthropic.com",
    base_url_hint="The host root (empty = https://api.anthropic.com).",
    count_tokens=True))
