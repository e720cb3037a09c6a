"""Upstream channels: admin operations and the masked view. Upstream keys and credentials are
encrypted here; what each type takes comes from the registry (app/channel_types/)."""
from __future__ import annotations

import json

from ..channel_types import ChannelType, channel_type
from ..crypto import SecretBox, mask
from ..errors import InvalidRequest, NotFound
from ..models import Channel, utcnow
from ..timefmt import iso
from .changes import announce
from .upstream_policy import DEFAULT_POLICY, UpstreamPolicy, normalise, shape_problem  # noqa: F401 (UpstreamPolicy: imported from here)


def serialize(channel: Channel) -> dict:
    return {
        "id": channel.id,
        "name": channel.name,
        "type": channel.type,
        "base_url": effective_base_url(channel.type, channel.base_url, channel.options),
        "api_key": channel.api_key_hint,
        "options": dict(channel.options or {}),
        "credentials": "set" if channel.credentials_enc else None,  # write-only, like api_key
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
    if "credentials" in out:
        secret = out.pop("credentials")
        out["credentials_enc"] = box.encrypt(json.dumps(secret, separators=(",", ":"))) if secret else None
    if "options" in out:
        out["options"] = {k: v for k, v in (out["options"] or {}).items() if v not in (None, "")}
    if out.get("base_url"):  # parsed and normalised when written (upstream_policy.py)
        problem = shape_problem(out["base_url"])
        if problem:
            raise InvalidRequest(f"base_url: {problem}")
        out["base_url"] = normalise(out["base_url"])
    return out


def effective_base_url(type_name: str, base_url: str | None, options: dict | None = None) -> str | None:
    """The stored URL, or the type's default (kept out of the row so a type change can't inherit it)."""
    kind = channel_type(type_name)
    return kind.base_url(base_url, options) if kind else base_url


def _check_base_url(type_name: str, base_url: str | None, options: dict | None, policy: UpstreamPolicy) -> None:
    kind = channel_type(type_name)
    if kind is None or kind.local:
        return
    url = kind.base_url(base_url, options)
    if not url:
        raise InvalidRequest(f"base_url: required for {type_name} channels")
    refusal = policy.refusal(url, resolve=True)
    if refusal:
        raise InvalidRequest(f"base_url: {refusal}")


def _check_fields(kind: ChannelType, given: dict, channel: Channel | None, policy: UpstreamPolicy) -> None:
    """What the type takes and needs: its options, credentials and key (400 naming the field).
    `channel` is the row being updated: fields not given keep their stored values."""
    options = given["options"] if "options" in given else dict(channel.options or {}) if channel else {}
    allowed = {o.name: o for o in kind.options}
    for name, value in (options or {}).items():
        if name not in allowed:
            raise InvalidRequest(f"options.{name}: not an option of {kind.name} channels"
                                 + (f" (options: {', '.join(allowed)})" if allowed else ""))
        pattern = allowed[name].pattern
        if pattern is not None and not pattern.match(value):
            raise InvalidRequest(f"options.{name}: {value!r} is not a valid value ({allowed[name].help})")
    for option in kind.options:
        if option.required and not (options or {}).get(option.name):
            raise InvalidRequest(f"options.{option.name}: required for {kind.name} channels ({option.help})")
    credentials = given.get("credentials")
    if credentials:
        if kind.credentials is None:
            raise InvalidRequest(f"credentials: {kind.name} channels take no credentials")
        try:
            kind.credentials(credentials)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        token_uri = credentials.get("token_uri")
        refusal = policy.refusal(token_uri, resolve=True) if isinstance(token_uri, str) else None
        if refusal:
            raise InvalidRequest(f"credentials.token_uri: {refusal}")
    if given.get("api_key") and kind.api_key == "refused":
        raise InvalidRequest(f"api_key: {kind.name} channels take no api_key (use credentials)")
    if kind.auth_required:
        has_key = given["api_key"] if "api_key" in given else (channel is not None and channel.api_key_enc)
        has_credentials = credentials if "credentials" in given else (channel is not None and channel.credentials_enc)
        if not has_key and not has_credentials:
            raise InvalidRequest(f"credentials: required for {kind.name} channels"
                                 + (" (or an api_key)" if kind.api_key == "optional" else ""))


def _check_name_free(name: str, own_id: int | None = None) -> None:
    query = Channel.select(Channel.id).where(Channel.name == name)
    if own_id is not None:
        query = query.where(Channel.id != own_id)
    if query.exists():
        raise InvalidRequest(f"name: a channel named {name!r} already exists")


def create_channel(fields: dict, box: SecretBox, policy: UpstreamPolicy = DEFAULT_POLICY) -> Channel:
    kind = channel_type(fields["type"])
    if kind is None:  # the admin schema allows registered types only; the CLI and bootstrap name their own
        raise InvalidRequest(f"type: unknown channel type {fields['type']!r}")
    _check_fields(kind, fields, None, policy)
    columns = _columns(fields, box)
    _check_base_url(columns["type"], columns.get("base_url"), columns.get("options"), policy)
    _check_name_free(columns["name"])
    channel = Channel.create(**columns)
    announce()
    return channel


def get_channel(channel_id: int) -> Channel:
    channel = Channel.get_or_none(Channel.id == channel_id) if 0 < channel_id < 2 ** 63 else None
    if channel is None:
        raise NotFound(f"no channel with id {channel_id}")
    return channel


def list_channels() -> list[Channel]:
    return list(Channel.select().order_by(Channel.id))


def update_channel(channel_id: int, fields: dict, box: SecretBox,
                   policy: UpstreamPolicy = DEFAULT_POLICY) -> Channel:
    channel = get_channel(channel_id)
    kind = channel_type(fields.get("type", channel.type))
    if kind is not None:
        _check_fields(kind, fields, channel, policy)
    columns = _columns(fields, box)
    if {"type", "base_url", "options"} & set(columns):
        _check_base_url(columns.get("type", channel.type), columns.get("base_url", channel.base_url),
                        columns.get("options", channel.options), policy)
    if "name" in columns:
        _check_name_free(columns["name"], channel_id)
    if columns:
        columns["updated_at"] = utcnow()
        Channel.update(**columns).where(Channel.id == channel_id).execute()
        announce()
    return get_channel(channel_id)


def delete_channel(channel_id: int) -> None:
    get_channel(channel_id)
    Channel.delete().where(Channel.id == channel_id).execute()
    announce()
