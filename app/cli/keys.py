"""`octorelay keys`: API keys, as the admin API makes and shows them."""
from __future__ import annotations

import click

from .common import _app, _emit, _fields, _number, _resolve, _run, json_option, main

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
    from ..schemas import load
    from ..schemas.admin import KeySchema
    from ..services import keys as svc

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
    from ..services import keys as svc

    _app()
    _emit({"data": [svc.serialize(k) for k in svc.list_keys()]}, as_json, KEY_COLUMNS)


@keys.command("show")
@click.argument("key")
@json_option
def keys_show(key, as_json):
    """Show KEY (its id, or its name when no other key has it)."""
    from ..models import ApiKey
    from ..services import keys as svc

    _app()
    key_id = _resolve(ApiKey, "key", key)
    _emit(svc.serialize(_run(svc.get_key, key_id)), as_json)


@keys.command("update")
@click.argument("key")
@click.option("--name", help="A new name.")
@key_options
def keys_update(key, name, as_json, **options):
    """Change KEY (its id, or its name when no other key has it); in force for the next request."""
    from ..models import ApiKey
    from ..schemas import load
    from ..schemas.admin import KeySchema
    from ..services import keys as svc

    _app()
    key_id = _resolve(ApiKey, "key", key)
    fields = _run(lambda: load(KeySchema(), _key_fields(name, **options), partial=True))
    _emit(svc.serialize(_run(svc.update_key, key_id, fields)), as_json)


@keys.command("revoke")
@click.argument("key")
@json_option
def keys_revoke(key, as_json):
    """Revoke KEY (its id, or its name when no other key has it): 401 from the next request on."""
    from ..models import ApiKey
    from ..services import keys as svc

    _app()
    key_id = _resolve(ApiKey, "key", key)
    _emit(svc.serialize(_run(svc.revoke_key, key_id)), as_json)
