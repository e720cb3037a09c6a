"""`octorelay channels`: upstream channels, their types' fields from the registry."""
from __future__ import annotations

import json
import sys

import click

from ..state import services
from .common import _app, _emit, _fail, _fields, _resolve, _run, json_option, main

CHANNEL_COLUMNS = ["id", "name", "type", "base_url", "api_key", "models", "priority", "weight",
                   "enabled", "consecutive_failures", "cooldown_until"]


def _type_help() -> str:
    """The types from the registry (checked by the admin schema, which names them on a typo)."""
    from ..channel_types import CHANNEL_TYPES

    return "Channel type: " + "; ".join(t.label for t in CHANNEL_TYPES.values()) + "."


def channel_options(fn):
    for option in reversed([
        click.option("--type", "type_", help=_type_help()),
        click.option("--base-url", help="Empty: the type's default (bedrock and vertex: from the region)."),
        click.option("--api-key", help="Upstream key (stored encrypted). '-' reads it from stdin."),
        click.option("--region", help="bedrock, vertex: the cloud region (vertex: or global)."),
        click.option("--project-id", help="vertex: the Google Cloud project."),
        click.option("--option", "extra_options", multiple=True, help="NAME=VALUE of the type's options (repeat)."),
        click.option("--credentials-file", type=click.Path(dir_okay=False, allow_dash=True),
                     help="bedrock: JSON {aws_access_key_id, aws_secret_access_key, aws_session_token?}; "
                          "vertex: the service account's JSON key file. '-' reads stdin. Stored encrypted."),
        click.option("--model", "models", multiple=True, help="Model glob it serves (repeat)."),
        click.option("--map", "mappings", multiple=True, help="CLIENT_MODEL=UPSTREAM_MODEL (repeat)."),
        click.option("--priority", type=int),
        click.option("--weight", type=int),
        click.option("--timeout", "timeout_s", type=float, help="Seconds to wait for the head and each chunk."),
        click.option("--enable/--disable", "enabled", default=None),
        json_option,
    ]):
        fn = option(fn)
    return fn


def _credentials(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        value = json.loads(text)
    except (OSError, ValueError) as exc:
        _fail(f"--credentials-file: cannot read a JSON object from {path!r} ({type(exc).__name__})")
    if not isinstance(value, dict):
        _fail("--credentials-file: the file must hold one JSON object")
    return value


def _channel_fields(name, type_, base_url, api_key, models, mappings, priority, weight, timeout_s, enabled,
                    region=None, project_id=None, extra_options=(), credentials_file=None):
    if api_key == "-":
        api_key = sys.stdin.readline().strip()
    options = None
    if region or project_id or extra_options:
        options = {}
        for item in extra_options:
            option, sep, value = item.partition("=")
            if not sep:
                _fail(f"--option {item!r}: expected NAME=VALUE")
            options[option] = value
        options.update({k: v for k, v in (("region", region), ("project_id", project_id)) if v})
    model_map = None
    if mappings:
        model_map = {}
        for item in mappings:
            source, sep, target = item.partition("=")
            if not sep:
                _fail(f"--map {item!r}: expected CLIENT_MODEL=UPSTREAM_MODEL")
            model_map[source] = target
    return _fields(name=name, type=type_, base_url=base_url, api_key=api_key,
                   options=options, credentials=_credentials(credentials_file),
                   models=list(models) if models else None, model_map=model_map,
                   priority=priority, weight=weight, timeout_s=timeout_s, enabled=enabled)


@main.group()
def channels():
    """Upstream channels."""


@channels.command("add")
@click.option("--name", required=True)
@channel_options
def channels_add(name, as_json, **options):
    from ..schemas import load
    from ..schemas.admin import ChannelSchema
    from ..services import channels as svc

    app = _app()
    fields = _run(load, ChannelSchema(), _channel_fields(name, **options))
    state = services(app)
    channel = _run(svc.create_channel, fields, state.secrets, state.upstream_policy)
    _emit(svc.serialize(channel), as_json)


@channels.command("list")
@json_option
def channels_list(as_json):
    from ..services import channels as svc

    _app()
    _emit({"data": [svc.serialize(c) for c in svc.list_channels()]}, as_json, CHANNEL_COLUMNS)


@channels.command("update")
@click.argument("channel")
@click.option("--name", help="A new name.")
@channel_options
def channels_update(channel, name, as_json, **options):
    """Change CHANNEL (its id or name); in force for the next request."""
    from ..models import Channel
    from ..schemas import load
    from ..schemas.admin import ChannelSchema
    from ..services import channels as svc

    app = _app()
    channel_id = _resolve(Channel, "channel", channel)
    fields = _run(lambda: load(ChannelSchema(), _channel_fields(name, **options), partial=True))
    if fields.get("options"):  # --region / --option change those options, keeping the others
        fields["options"] = {**(_run(svc.get_channel, channel_id).options or {}), **fields["options"]}
    state = services(app)
    channel = _run(svc.update_channel, channel_id, fields, state.secrets, state.upstream_policy)
    _emit(svc.serialize(channel), as_json)


@channels.command("remove")
@click.argument("channel")
def channels_remove(channel):
    """Delete CHANNEL (its id or name)."""
    from ..models import Channel
    from ..services import channels as svc

    _app()
    channel_id = _resolve(Channel, "channel", channel)
    _run(svc.delete_channel, channel_id)
    click.echo(f"removed channel {channel_id}")
