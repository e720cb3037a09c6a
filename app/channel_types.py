"""Channel types: the one place that says, for each type, how to reach it and what it needs.

A type is its adaptor (translation), its transport (how bytes reach it), its
default base URL, the fields a channel of it takes, and whether its upstream
counts tokens. The admin schema, the services, routing, the channel test,
the CLI and the dashboard all read this registry; adding a type is its
adaptor module (and transport, if plain HTTP will not do) plus one
`register_channel_type()` call below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from .adaptors.anthropic import AnthropicAdaptor
from .adaptors.base import Adaptor
from .adaptors.bedrock import BedrockAdaptor
from .adaptors.bedrock import REGION as AWS_REGION
from .adaptors.bedrock import check_credentials as check_aws_credentials
from .adaptors.bedrock import default_base_url as bedrock_url
from .adaptors.openai import OpenAIAdaptor
from .adaptors.vertex import PROJECT as GCP_PROJECT
from .adaptors.vertex import REGION as GCP_REGION
from .adaptors.vertex import VertexAdaptor
from .adaptors.vertex import check_credentials as check_service_account
from .adaptors.vertex import default_base_url as vertex_url
from .upstream.aws import AwsTransport
from .upstream.google import GoogleTransport
from .upstream.mock import MockTransport
from .upstream.transport import HttpTransport


@dataclass(frozen=True)
class Option:
    """One entry of a channel's `options`: a short string, e.g. a region."""
    name: str
    help: str
    pattern: object | None = None  # compiled regex the value must match
    required: bool = True


@dataclass(frozen=True)
class ChannelType:
    name: str
    label: str                                      # for the dashboard's type list
    adaptor: Adaptor
    transport: Callable[[HttpTransport], object]    # this type's transport, over the shared HTTP one
    default_base_url: Callable[[Mapping], str | None] = lambda options: None
    base_url_hint: str = ""
    local: bool = False           # answers in-process: no base_url, no upstream policy
    api_key: str = "optional"     # "optional" (see `auth_required`), "unused" (ignored) or "refused"
    options: tuple[Option, ...] = ()
    credentials: Callable[[Mapping], None] | None = None  # checks `credentials`; None: not taken
    credentials_help: str = ""
    auth_required: bool = False   # an api_key or credentials must be set
    count_tokens: bool = False    # the upstream has a count_tokens endpoint
    count_tokens_fallback: bool = False  # the upstream refusing a count (400/404) -> the local estimate

    def base_url(self, stored: str | None, options: Mapping | None) -> str | None:
        """The stored URL, or the type's default (kept out of the row so a type change can't inherit it)."""
        return stored or self.default_base_url(options or {})

    def public(self) -> dict:
        """What the dashboard needs to draw this type's form."""
        return {"name": self.name, "label": self.label, "base_url_hint": self.base_url_hint,
                "default_base_url": self.default_base_url({}) if not self.options else None,
                "local": self.local, "api_key": self.api_key,
                "options": [{"name": o.name, "help": o.help, "required": o.required} for o in self.options],
                "credentials": self.credentials is not None, "credentials_help": self.credentials_help,
                "count_tokens": self.count_tokens}


CHANNEL_TYPES: dict[str, ChannelType] = {}


def register_channel_type(channel_type: ChannelType) -> None:
    CHANNEL_TYPES[channel_type.name] = channel_type


def channel_type(name: str) -> ChannelType | None:
    return CHANNEL_TYPES.get(name)


def build_transports(http: HttpTransport) -> dict[str, object]:
    """type name -> its transport; types over plain HTTP share `http` (one connection pool)."""
    return {name: t.transport(http) for name, t in CHANNEL_TYPES.items()}


def _shared(http: HttpTransport) -> HttpTransport:
    return http


register_channel_type(ChannelType(
    name="anthropic", label="anthropic (Anthropic's API)", adaptor=AnthropicAdaptor(), transport=_shared,
    default_base_url=lambda options: "https://api.anthropic.com",
    base_url_hint="The host root (empty = https://api.anthropic.com).",
    count_tokens=True))
register_channel_type(ChannelType(
    name="openai", label="openai (Chat Completions)", adaptor=OpenAIAdaptor(), transport=_shared,
    base_url_hint="The root ending in /v1, e.g. http://localhost:11434/v1 (required)."))
register_channel_type(ChannelType(
    name="mock", label="mock (local demo answers)", adaptor=AnthropicAdaptor(),
    transport=lambda http: MockTransport(), local=True, api_key="unused", count_tokens=True,
    base_url_hint="None: answers locally."))
register_channel_type(ChannelType(
    name="bedrock", label="bedrock (Claude on AWS Bedrock)", adaptor=BedrockAdaptor(), transport=AwsTransport,
    default_base_url=bedrock_url,
    base_url_hint="Empty = https://bedrock-runtime.{region}.amazonaws.com.",
    options=(Option("region", "AWS region, e.g. us-east-1", AWS_REGION),),
    credentials=check_aws_credentials, auth_required=True,
    credentials_help='{"aws_access_key_id": "…", "aws_secret_access_key": "…", "aws_session_token"?: "…"} '
                     "(SigV4), or a Bedrock API key in the API key field instead.",
    count_tokens=True, count_tokens_fallback=True))  # CountTokens exists for some models and regions only
register_channel_type(ChannelType(
    name="vertex", label="vertex (Claude on Google Vertex AI)", adaptor=VertexAdaptor(), transport=GoogleTransport,
    default_base_url=vertex_url, api_key="refused",
    base_url_hint="Empty = https://{region}-aiplatform.googleapis.com (global: https://aiplatform.googleapis.com).",
    options=(Option("project_id", "Google Cloud project id", GCP_PROJECT),
             Option("region", "Vertex AI region, e.g. us-east5, or global", GCP_REGION)),
    credentials=check_service_account, auth_required=True,
    credentials_help="The service account's JSON key file (role roles/aiplatform.user).",
    count_tokens=True))

__all__ = ["CHANNEL_TYPES", "ChannelType", "Option", "build_transports", "channel_type", "register_channel_type"]
