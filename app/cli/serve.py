"""Running octorelay: `up`, the database schema, a new secret key."""
from __future__ import annotations

import os
import shutil
import sys

import click

from .common import _app, _fail, main

GUNICORN_CONFIG = "python:app.gunicorn_config"


@main.command()
def up():
    """Migrate, bootstrap on first start, then exec gunicorn."""
    from ..crypto import SecretBox, secret_keys_for
    from ..db import db, upgrade
    from ..services.bootstrap import bootstrap

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
    from ..db import db, upgrade

    _app()
    applied = upgrade(db.obj)
    for name in applied:
        click.echo(f"applied {name}")
    click.echo("database is up to date" if not applied else f"{len(applied)} migration(s) applied")


@db_group.command("status")
def db_status():
    """List pending migrations."""
    from ..db import db, pending_migrations

    _app()
    pending = pending_migrations(db.obj)
    click.echo("pending: " + ", ".join(pending) if pending else "database is up to date")


@main.command()
def secret():
    """Print a new OCTORELAY_SECRET_KEY (a Fernet key)."""
    from ..crypto import new_secret_key

    click.echo(new_secret_key())
