"""The application object: every service one app holds, typed, in one place.

`create_app()` builds one `AppServices` and attaches it to the Flask app once;
the web layer (and the CLI, the gunicorn hooks, tests) reach a service as
`services().relay` — `services(app)` outside a request — instead of string keys
in `app.extensions`. Services themselves never look here: they are handed what
they use when they are built. (The settings stay in `app.config["OCTORELAY"]`.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:  # types only: app/__init__.py builds these lazily, so importing this stays cheap
    from playhouse.pool import PooledDatabase
    from redis import Redis

    from .crypto import SecretBox
    from .services.admin_guard import AdminGuard
    from .services.auth import KeyCache
    from .services.refusals import RefusalLog
    from .services.relay import Relay
    from .services.upstream_policy import UpstreamPolicy

EXTENSION = "octorelay"  # the one key in app.extensions


@dataclass(eq=False)
class AppServices:
    secrets: SecretBox  # encrypts channel keys and credentials at rest
    upstream_policy: UpstreamPolicy  # where channels may point
    key_cache: KeyCache  # client API keys, looked up by hash
    redis: Redis | None  # None: limits and affinity are held in this process
    admin_guard: AdminGuard  # throttles failed admin and metrics tokens
    relay: Relay
    refusals: RefusalLog  # rows for requests refused before the relay took charge
    database: PooledDatabase | None = None  # bound by db.init_app()

    def close(self) -> None:
        """Write what is queued, then close what the app holds open: the relay's writer, watch and
        upstream connections, the one Redis pool every service shares, and the database pool (a
        worker's exit, the end of a test)."""
        self.relay.close()
        if self.redis is not None:
            self.redis.close()
        if self.database is not None:
            self.database.close_all()


def attach(app: Flask, state: AppServices) -> None:
    if EXTENSION in app.extensions:
        raise RuntimeError("this app already has its services")
    app.extensions[EXTENSION] = state


def services(app: Flask | None = None) -> AppServices:
    """The services of `app`, by default of the app handling the current request (or CLI command)."""
    target = app if app is not None else current_app
    return target.extensions[EXTENSION]


def find_services(app: object) -> AppServices | None:
    """The services of `app` when it is an octorelay app; None for anything else (no app yet, or a
    WSGI callable of another kind), for the gunicorn hooks that are handed whatever the worker loaded."""
    extensions = getattr(app, "extensions", None)
    found = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
    return found if isinstance(found, AppServices) else None
