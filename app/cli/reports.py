"""`octorelay prices`, `usage` and `logs`: what is charged, and what was."""
from __future__ import annotations

import json

import click

from .common import _app, _emit, _fail, _run, json_option, main


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
def prices(ctx, as_json):
    """Model prices (USD per million tokens). Without a subcommand: list them."""
    if ctx.invoked_subcommand is None:
        from ..services import prices as svc

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
    from ..schemas import load
    from ..schemas.admin import PriceSchema
    from ..services import prices as svc

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


@prices.command("remove")
@click.argument("model")
def prices_remove(model):
    """Delete the price of MODEL (a name or a glob, exactly as listed). In force at once: the model then
    bills by the next matching glob, or is unpriced."""
    from ..services import prices as svc

    _app()
    _run(svc.delete_price, model)
    click.echo(f"removed the price of {model}")


# usage and logs --------------------------------------------------------------

USAGE_COLUMNS = ["requests", "input_tokens", "output_tokens", "cache_creation_input_tokens",
                 "cache_creation_1h_input_tokens", "cache_read_input_tokens", "web_search_requests", "cost_usd"]
LOG_COLUMNS = ["created_at", "request_id", "key_id", "channel_id", "model", "stream", "status",
               "error_type", "input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_creation_1h_input_tokens", "cache_read_input_tokens", "web_search_requests", "cost_usd",
               "latency_ms", "ttft_ms", "attempts",
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
    from ..schemas.usage import parse_usage_query
    from ..services import usage as svc

    _app()
    query = _run(parse_usage_query, {"key_id": key_id, "model": model, "since": since,
                                         "until": until, "group_by": group_by})
    rows = _run(lambda: svc.usage_report(**query))
    group_columns = [svc.GROUP_COLUMNS[name] for name in query.get("group_by", ())]
    _emit({"data": rows}, as_json, group_columns + USAGE_COLUMNS)


@main.command()
@click.option("--key-id", help="Only this key.")
@click.option("--limit", help="How many requests (1-1000, default 50).")
@click.option("--since", help="ISO-8601 date or datetime (inclusive; a date is midnight UTC).")
@click.option("--until", help="ISO-8601 date or datetime (exclusive).")
@click.option("--before-id", help="Continue after this request_id (the last one of the page before).")
@json_option
def logs(key_id, limit, since, until, before_id, as_json):
    """The most recent requests, newest first (as GET /admin/logs)."""
    from ..schemas.usage import parse_logs_query
    from ..services import usage as svc

    _app()
    query = _run(parse_logs_query, {"key_id": key_id, "limit": limit, "since": since, "until": until,
                                    "before_id": before_id})
    _emit(_run(lambda: svc.log_page(**query)), as_json, LOG_COLUMNS)
