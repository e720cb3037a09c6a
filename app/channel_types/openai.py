"""OpenAI-compatible servers (Chat Completions): requests and answers translated."""
from ..adaptors.openai import OpenAIAdaptor
from . import ChannelType, register_channel_type, shared_http

register_channel_type(ChannelType(
    name="openai", label="openai (Chat Completions)", adaptor=OpenAIAdaptor(), transport=shared_http,
    base_url_hint="The root ending in /v1, e.g. http://localhost:11434/v1 (required)."))
