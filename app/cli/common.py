"""What every `octorelay` command shares: the group, one-line errors, the app context, output."""
from __future__ import annotations

import json
import sys

import click

from ..config import ConfigError


def _fail(message: str):
    click.echo(f"octorelay: error: {message}", err=True)
    sys.exit(2)


def _app():
    """The app with an open app context, or one clean error line on bad config."""
    from .. import create_app

    try:
        app = create_app()
    except ConfigError as exc:
        _fail(str(exc))
    ctx = app.app_context()
    ctx.push()
    return app


def _resolve(model, what: str, ref: str) -> int:
    """An id, or the id of the one row named `ref` (call inside _app()): `channels update claude-eu`
    reads as what it does, and a README's commands need not guess the ids earlier steps got.
    All digits is an id; a name shared by several rows (keys may share one) must be given by id."""
    ref = ref.strip()
    if ref.isdigit():
        return int(ref)
    ids = [row.id for row in model.select(model.id).where(model.name == ref).limit(3)]
    if not ids:
        _fail(f"no {what} named {ref!r} (give its id or name: octorelay {what}s list)")
    if len(ids) > 1:
        _fail(f"several {what}s are named {ref!r}: give the id (octorelay {what}s list)")
    return ids[0]


def _run(fn, *args):
    """Call a service; turn our errors into one line and a non-zero exit."""
    from ..errors import RelayError

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
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


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

        from ..db import describe_error

        try:
            return super().invoke(ctx)
        except (OperationalError, InterfaceError) as exc:
            _fail(f"cannot use the database: {describe_error(exc)} (check DATABASE_URL)")


@click.group(cls=_Commands)
def main():
    """octorelay: a relay for the Claude Messages API."""
