"""The `octorelay` command: run the service, migrate, and administer keys, channels and prices.

Admin commands validate with the same schemas and call the same services
as the admin API, so `--json` prints exactly what the API would return.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import click

from .config import ConfigError, load_settings

GUNICORN_CONFIG = "python:app.gunicorn_config"


def _fail(message: str):
    click.echo(f"octorelay: error: {message}", err=True)
    sys.exit(2)


def _app():
    """The app with an open app context, or one clean error line on bad config."""
    from . import create_app

    try:
        app = create_app()
    except ConfigError as exc:
        _fail(str(exc))
    ctx = app.app_context()
    ctx.push()
    return app


def _run(fn, *args):
    """Call a service; turn our errors into one line and a non-zero exit."""
    from .errors import RelayError

    try:
        return fn(*args)
    except RelayError as exc:
        _fail(exc.message)


def _emit(obj, as_json: bool, columns: list[str] | None = None):
    if as_json:
        click.echo(json.dumps(obj, indent=2, ensure_ascii=False))
        return
    rows = obj["data"] if isinstance(obj, dict) and "data" in obj else [obj]
    if columns is None:
        for row in rows:
            for name, value in row.items():
                click.echo(f"{name:>22}: {value}")
        return
    table = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for t in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths)))


def _number(value, field: str):
    """CLI numbers: 'none' clears the limit; otherwise an int or a float."""
    if value is None:
        return None
    if value.lower() in ("none", "null", "unlimited"):
        return "CLEAR"
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            _fail(f"{field}: {value!r} is not a number")


def _fields(**options) -> dict:
    """Only the options given; 'CLEAR' becomes an explicit null."""
    out = {}
    for name, value in options.items():
        if value is None or value == ():
            continue
        out[name] = None if value == "CLEAR" else value
    return out


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON objects.")


class _Commands(click.Group):
    """Every command: a database that cannot be reached is one line saying so, not a traceback."""

    def invoke(self, ctx):
        from peewee import InterfaceError, OperationalError

        from .db import describe_error

        try:
            return super().invoke(ctx)
        except (OperationalError, InterfaceError) as exc:
            _fail(f"cannot use the database: {describe_error(exc)} (check DATABASE_URL)")


@click.group(cls=_Commands)
def main():
    """octorelay: a relay for the Claude Messages API."""


# run ------------------------------------------------------------------------

@main.command()
def up():
    """Migrate, bootstrap on first start, then exec gunicorn."""
    from .crypto import SecretBox, secret_keys_for
    from .db import db, upgrade
    from .services.bootstrap import bootstrap

    app = _app()
    settings = app.config["OCTORELAY"]
    for name in upgrade(db.obj):
        click.echo(f"octorelay: applied migration {name}")
    with db.connection_context():
        for line in bootstrap(settings.anthropic_api_key, SecretBox(secret_keys_for(settings))):
            click.echo(line)
    sys.stdout.flush()
    if not db.is_closed():
        db.close()
    gunicorn = shutil.which("gunicorn")
    if gunicorn is None:
        _fail("gunicorn is not installed")
    os.execv(gunicorn, [gunicorn, "-c", GUNICORN_CONFIG])


@main.group("db")
def db_group():
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade():
    """Apply pending migrations (idempotent)."""
    from .db import db, upgrade

    _app()
    applied = upgrade(db.obj)
    for name in applied:
        click.echo(f"applied {name}")
    click.echo("database is up to date" if not applied else f"{len(applied)} migration(s) applied")


@db_group.command("status")
def db_status():
    """List pending migrations."""
    from .db import db, pending_migrations

    _app()
    pending = pending_migrations(db.obj)
    click.echo("pending: " + ", ".join(pending) if pending else "database is up to date")


@main.command()
def secret():
    """Print a new OCTORELAY_SECRET_KEY (a Fernet key)."""
    from .crypto import new_secret_key

    click.echo(new_secret_key())


# keys ------------------------------------------------------------------------

KEY_COLUMNS = ["id", "name", "key_prefix", "status", "models", "budget_usd", "budget_period", "used_usd",
               "token_quota", "used_tokens", "budget_resets_at", "rpm", "tpm", "max_concurrency", "expires_at"]


def key_options(fn):
    for option in reversed([
        click.option("--budget-usd", help="USD budget ('none' clears)."),
        click.option("--budget-period", help="day, week or month: used USD and tokens start again from 0 at "
                                              "each UTC period's start ('none': never)."),
        click.option("--token-quota", help="Token quota ('none' clears)."),
        click.option("--rpm", help="Requests per minute ('none' clears)."),
        click.option("--tpm", help="Tokens per minute ('none' clears)."),
        click.option("--max-concurrency", help="Concurrent requests ('none' clears)."),
        click.option("--model", "models", multiple=True, help="Allowed model glob (repeat)."),
        click.option("--expires-at", help="ISO-8601 expiry ('none' clears)."),
        click.option("--enable/--disable", "enabled", default=None),
        json_option,
    ]):
        fn = option(fn)
    return fn


def _key_fields(name, budget_usd, budget_period, token_quota, rpm, tpm, max_concurrency, models, expires_at,
                enabled):
    expires = "CLEAR" if expires_at and expires_at.lower() == "none" else expires_at
    return _fields(name=name, budget_usd=_number(budget_usd, "budget_usd"),
                   budget_period="CLEAR" if budget_period and budget_period.lower() == "none" else budget_period,
                   token_quota=_number(token_quota, "token_quota"), rpm=_number(rpm, "rpm"),
                   tpm=_number(tpm, "tpm"), max_concurrency=_number(max_concurrency, "max_concurrency"),
                   models=list(models) if models else None, expires_at=expires, enabled=enabled)


@main.group()
def keys():
    """API keys."""


@keys.command("create")
@click.option("--name", required=True)
@key_options
def keys_create(name, as_json, **options):
    from .schemas import load
    from .schemas.admin import KeySchema
    from .services import keys as svc

    _app()
    fields = _run(load, KeySchema(), _key_fields(name, **options))
    key, raw = _run(svc.create_key, fields)
    obj = {**svc.serialize(key), "key": raw}
    if as_json:
        _emit(obj, True)
    else:
        click.echo(f"created key {key.id} ({key.name}); the key is shown only now:\n  {raw}")


@keys.command("list")
@json_option
def keys_list(as_json):
    from .services import keys as svc

    _app()
    _emit({"data": [svc.serialize(k) for k in svc.list_keys()]}, as_json, KEY_COLUMNS)


@keys.command("show")
@click.argument("key_id", type=int)
@json_option
def keys_show(key_id, as_json):
    from .services import keys as svc

    _app()
    _emit(svc.serialize(_run(svc.get_key, key_id)), as_json)


@keys.command("update")
@click.argument("key_id", type=int)
@click.option("--name")
@key_options
def keys_update(key_id, name, as_json, **options):
    from .schemas import load
    from .schemas.admin import KeySchema
    from .services import keys as svc

    _app()
    fields = _run(lambda: load(KeySchema(), _key_fields(name, **options), partial=True))
    _emit(svc.serialize(_run(svc.update_key, key_id, fields)), as_json)


@keys.command("revoke")
@click.argument("key_id", type=int)
@json_option
def keys_revoke(key_id, as_json):
    from .services import keys as svc

    _app()
    _emit(svc.serialize(_run(svc.revoke_key, key_id)), as_json)


# channels --------------------------------------------------------------------

CHANNEL_COLUMNS = ["id", "name", "type", "base_url", "api_key", "models", "priority", "weight",
                   "enabled", "consecutive_failures", "cooldown_until"]


def _type_help() -> str:
    """The types from the registry (checked by the admin schema, which names them on a typo)."""
    from .channel_types import CHANNEL_TYPES

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
    from .schemas import load
    from .schemas.admin import ChannelSchema
    from .services import channels as svc

    app = _app()
    fields = _run(load, ChannelSchema(), _channel_fields(name, **options))
    channel = _run(svc.create_channel, fields, app.extensions["octorelay.secrets"],
                   app.extensions["octorelay.upstream_policy"])
    _emit(svc.serialize(channel), as_json)


@channels.command("list")
@json_option
def channels_list(as_json):
    from .services import channels as svc

    _app()
    _emit({"data": [svc.serialize(c) for c in svc.list_channels()]}, as_json, CHANNEL_COLUMNS)


@channels.command("update")
@click.argument("channel_id", type=int)
@click.option("--name")
@channel_options
def channels_update(channel_id, name, as_json, **options):
    from .schemas import load
    from .schemas.admin import ChannelSchema
    from .services import channels as svc

    app = _app()
    fields = _run(lambda: load(ChannelSchema(), _channel_fields(name, **options), partial=True))
    if fields.get("options"):  # --region / --option change those options, keeping the others
        fields["options"] = {**(_run(svc.get_channel, channel_id).options or {}), **fields["options"]}
    channel = _run(svc.update_channel, channel_id, fields, app.extensions["octorelay.secrets"],
                   app.extensions["octorelay.upstream_policy"])
    _emit(svc.serialize(channel), as_json)


@channels.command("remove")
@click.argument("channel_id", type=int)
def channels_remove(channel_id):
    from .services import channels as svc

    _app()
    _run(svc.delete_channel, channel_id)
    click.echo(f"removed channel {channel_id}")


# prices ----------------------------------------------------------------------

@main.group(invoke_without_command=True)
@json_option
@click.pass_context
def prices(ctx, as_json):
    """Model prices (USD per million tokens). Without a subcommand: list them."""
    if ctx.invoked_subcommand is None:
        from .services import prices as svc

        _app()
        _emit({"data": [svc.serialize(p) for p in svc.list_prices()]}, as_json,
              ["model", "input", "output", "cache_write", "cache_write_1h", "cache_read", "web_search_per_1k"])


@prices.command("set")
@click.argument("model")
@click.option("--input", "input_", type=float, required=True, help="USD per million input tokens.")
@click.option("--output", type=float, required=True, help="USD per million output tokens.")
@click.option("--cache-write", type=float, required=True, help="5-minute cache write, USD per million tokens.")
@click.option("--cache-write-1h", type=float, help="1-hour cache write (default: 2 x input).")
@click.option("--cache-read", type=float, required=True)
@click.option("--web-search-per-1k", type=float, help="USD per 1,000 server web searches.")
@click.option("--long-context", "long_context", metavar="JSON",
              help='Tier above a prompt size, e.g. \'{"threshold_tokens": 200000, "input": 6, "output": 22.5, '
                   '"cache_write": 7.5, "cache_read": 0.6}\'.')
@json_option
def prices_set(model, input_, output, cache_write, cache_write_1h, cache_read, web_search_per_1k,
               long_context, as_json):
    """Create or replace a price; MODEL may be a glob (claude-opus-5*). In force at once."""
    from .schemas import load
    from .schemas.admin import PriceSchema
    from .services import prices as svc

    _app()
    body = {"input": input_, "output": output, "cache_write": cache_write, "cache_read": cache_read,
            "cache_write_1h": cache_write_1h, "web_search_per_1k": web_search_per_1k}
    if long_context is not None:
        try:
            body["long_context"] = json.loads(long_context)
        except ValueError:
            _fail("--long-context: not valid JSON")
    price, _ = _run(svc.put_price, model, _run(load, PriceSchema(), body))
    _emit(svc.serialize(price), as_json)


# usage and logs --------------------------------------------------------------

USAGE_COLUMNS = ["requests", "input_tokens", "output_tokens", "cache_creation_input_tokens",
                 "cache_creation_1h_input_tokens", "cache_read_input_tokens", "web_search_requests", "cost_usd"]
LOG_COLUMNS = ["created_at", "request_id", "key_id", "channel_id", "model", "stream", "status",
               "error_type", "input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_creation_1h_input_tokens", "cache_read_input_tokens", "web_search_requests", "cost_usd", "latency_ms", "ttft_ms", "attempts",
               "client_disconnected"]


@main.command()
@click.option("--key-id", help="Only this key.")
@click.option("--model", help="Only this model (as the client named it).")
@click.option("--since", help="ISO-8601 date or datetime (inclusive; a date is midnight UTC).")
@click.option("--until", help="ISO-8601 date or datetime (exclusive).")
@click.option("--group-by", help="Comma-separated: key, model, channel, day.")
@json_option
def usage(key_id, model, since, until, group_by, as_json):
    """Usage totals from the request log, optionally grouped (as GET /admin/usage)."""
    from .services import usage as svc

    _app()
    query = _run(svc.parse_usage_query, {"key_id": key_id, "model": model, "since": since,
                                         "until": until, "group_by": group_by})
    rows = _run(lambda: svc.usage_report(**query))
    group_columns = [svc.GROUP_COLUMNS[name] for name in query.get("group_by", ())]
    _emit({"data": rows}, as_json, group_columns + USAGE_COLUMNS)


@main.command()
@click.option("--key-id", help="Only this key.")
@click.option("--limit", help="How many requests (1-1000, default 50).")
@json_option
def logs(key_id, limit, as_json):
    """The most recent requests, newest first (as GET /admin/logs)."""
    from .services import usage as svc

    _app()
    query = _run(svc.parse_logs_query, {"key_id": key_id, "limit": limit})
    _emit({"data": _run(lambda: svc.recent_logs(**query))}, as_json, LOG_COLUMNS)
