"""Upstream channels: admin operations and the masked view. Upstream keys are encrypted here."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..crypto import SecretBox, mask
from ..errors import InvalidRequest, NotFound
from ..models import Channel, utcnow
from ..timefmt import iso

# type -> default base_url (None: the type needs no upstream, or the admin must give one)
CHANNEL_TYPES = {
    "anthropic": "https://api.anthropic.com",
    "openai": None,
    "mock": None,
}


@dataclass(frozen=True)
class UpstreamPolicy:
    """Where channels may point (OCTORELAY_UPSTREAM_HTTPS_ONLY, OCTORELAY_UPSTREAM_HOSTS), so a
    leaked admin token cannot aim the relay, and its upstream keys, at internal addresses."""
    https_only: bool = False
    hosts: tuple[str, ...] = ()

    def refusal(self, base_url: str | None) -> str | None:
        """Why `base_url` is not allowed, or None."""
        if not base_url:
            return None
        parts = urlsplit(base_url)
        if self.https_only and parts.scheme != "https":
            return "must use https (OCTORELAY_UPSTREAM_HTTPS_ONLY is set)"
        host = (parts.hostname or "").lower()
        if self.hosts and not any(fnmatch.fnmatchcase(host, pattern) for pattern in self.hosts):
            return f"host {host!r} is not in OCTORELAY_UPSTREAM_HOSTS"
        return None


def serialize(channel: Channel) -> dict:
    return {
        "id": channel.id,
        "name": channel.name,
        "type": channel.type,
        "base_url": effective_base_url(channel.type, channel.base_url),
        "api_key": channel.api_key_hint,
        "models": list(channel.models or []),
        "model_map": dict(channel.model_map or {}),
        "priority": channel.priority,
        "weight": channel.weight,
        "timeout_s": channel.timeout_s,
        "enabled": channel.enabled,
        "consecutive_failures": channel.consecutive_failures,
        "cooldown_until": iso(channel.cooldown_until),
        "created_at": iso(channel.created_at),
        "updated_at": iso(channel.updated_at),
    }


def _columns(fields: dict, box: SecretBox) -> dict:
    out = dict(fields)
    if "api_key" in out:
        secret = out.pop("api_key")
        out["api_key_enc"] = box.encrypt(secret) if secret else None
        out["api_key_hint"] = mask(secret) if secret else None
    if out.get("base_url"):
        out["base_url"] = out["base_url"].rstrip("/")
    return out


def effective_base_url(channel_type: str, base_url: str | None) -> str | None:
    """The stored URL, or the type's default (kept out of the row so a type change can't inherit it)."""
    return base_url or CHANNEL_TYPES.get(channel_type)


def _check_base_url(channel_type: str, base_url: str | None, policy: UpstreamPolicy) -> None:
    if channel_type == "mock":
        return
    url = effective_base_url(channel_type, base_url)
    if not url:
        raise InvalidRequest(f"base_url: required for {channel_type} channels")
    refusal = policy.refusal(url)
    if refusal:
        raise InvalidRequest(f"base_url: {refusal}")


def _check_name_free(name: str, own_id: int | None = None) -> None:
    query = Channel.select(Channel.id).where(Channel.name == name)
    if own_id is not None:
        query = query.where(Channel.id != own_id)
    if query.exists():
        raise InvalidRequest(f"name: a channel named {name!r} already exists")


def create_channel(fields: dict, box: SecretBox, policy: UpstreamPolicy = UpstreamPolicy()) -> Channel:
    columns = _columns(fields, box)
    _check_base_url(columns["type"], columns.get("base_url"), policy)
    _check_name_free(columns["name"])
    return Channel.create(**columns)


def get_channel(channel_id: int) -> Channel:
    channel = Channel.get_or_none(Channel.id == channel_id) if 0 < channel_id < 2 ** 63 else None
    if channel is None:
        raise NotFound(f"no channel with id {channel_id}")
    return channel


def list_channels() -> list[Channel]:
    return list(Channel.select().order_by(Channel.id))


def update_channel(channel_id: int, fields: dict, box: SecretBox,
                   policy: UpstreamPolicy = UpstreamPolicy()) -> Channel:
    channel = get_channel(channel_id)
    columns = _columns(fields, box)
    if "type" in columns or "base_url" in columns:
        _check_base_url(columns.get("type", channel.type), columns.get("base_url", channel.base_url), policy)
    if "name" in columns:
        _check_name_free(columns["name"], channel_id)
    if columns:
        columns["updated_at"] = utcnow()
        Channel.update(**columns).where(Channel.id == channel_id).execute()
    return get_channel(channel_id)


def delete_channel(channel_id: int) -> None:
    get_channel(channel_id)
    Channel.delete().where(Channel.id == channel_id).execute()
