"""Channel types: the one place that says, for each type, how to reach it and what it needs.

A type is its adaptor (translation), its transport (how bytes reach it), its
default base URL, the fields a channel of it takes, and whether its upstream
counts tokens. The admin schema, the services, routing, the channel test,
the CLI and the dashboard all read this registry; adding a type is its
adaptor module (and transport, if plain HTTP will not do) plus one module
in this package holding its `register_channel_type()` call; every module
here is imported at the end of this file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import import_module
from pkgutil import iter_modules
from typing import Callable, Mapping

from ..adaptors.base import Adaptor
from ..upstream.transport import HttpTransport


@dataclass(frozen=True)
class Option:
    """One entry of a channel's `options`: a short string, e.g. a region."""
    name: str
    help: str
    pattern: re.Pattern[str] | None = None  # compiled regex the value must match
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


def shared_http(http: HttpTransport) -> HttpTransport:
    """The transport of types that speak plain HTTP: the one shared connection pool."""
    return http



# every module of this package is a type and registers itself when imported (alphabetical: the
# order of the dashboard's list and the CLI's help)
for _module in sorted(m.name for m in iter_modules(__path__)):
    import_module(f"{__name__}.{_module}")

__all__ = ["CHANNEL_TYPES", "ChannelType", "Option", "build_transports", "channel_type", "register_channel_type"]
