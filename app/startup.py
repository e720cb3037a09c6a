"""The settings gunicorn's master starts from, or one error line and exit 2.

Kept apart from the CLI on purpose: the master imports this before it forks,
and must not import requests, botocore or ssl (the gevent worker patches
them after the fork, and warns about modules imported before)."""
from __future__ import annotations

import sys

from .config import ConfigError, Settings, load_settings


def settings_or_exit() -> Settings:
    """Settings whose secret key works: a bad key stops the start before any worker forks (and
    SQLite's key file is created once, race-free)."""
    from .crypto import SecretBox, secret_keys_for

    try:
        settings = load_settings()
        SecretBox(secret_keys_for(settings))
        return settings
    except ConfigError as exc:
        print(f"octorelay: error: {exc}", file=sys.stderr)
        sys.exit(2)
