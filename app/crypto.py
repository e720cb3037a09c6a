"""Encryption at rest for upstream API keys (Fernet), and their masked display.

OCTORELAY_SECRET_KEY may hold several comma-separated Fernet keys: the first
encrypts, all decrypt, so keys can be rotated without downtime.
"""
from __future__ import annotations

import os
import tempfile

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .config import ConfigError, Settings


def new_secret_key() -> str:
    return Fernet.generate_key().decode()


def _sqlite_path(database_url: str) -> str | None:
    path = database_url.split("://", 1)[1] if "://" in database_url else ""
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel -> rel, sqlite:////abs -> /abs
    return None if path in ("", ":memory:") else os.path.abspath(path)


def _key_file_secret(db_path: str) -> str:
    """Read the key file beside the DB, creating it (0600) exactly once if missing."""
    path = db_path + ".secret"
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".octorelay-secret-")
        try:
            os.write(fd, (new_secret_key() + "\n").encode())
            os.fchmod(fd, 0o600)
            os.close(fd)
            try:
                os.link(tmp, path)  # atomic: concurrent workers agree on one key
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    with open(path) as fh:
        return fh.read().strip()


def secret_keys_for(settings: Settings) -> list[str]:
    if settings.secret_keys:
        return list(settings.secret_keys)
    if not settings.is_sqlite:
        raise ConfigError(
            "OCTORELAY_SECRET_KEY is required with PostgreSQL (all instances must share it); "
            "generate one with `octorelay secret`")
    db_path = _sqlite_path(settings.database_url)
    if db_path is None:
        return [new_secret_key()]  # in-memory DB: the secrets die with it anyway
    return [_key_file_secret(db_path)]


class SecretBox:
    """Encrypts and decrypts short secrets; raises ConfigError on a malformed key."""

    def __init__(self, keys: list[str]):
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError):
            raise ConfigError(
                "OCTORELAY_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes); "
                "generate one with `octorelay secret`") from None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "an upstream key cannot be decrypted: OCTORELAY_SECRET_KEY does not hold "
                "the key it was encrypted with") from None


def mask(secret: str) -> str:
    """`sk-ant-api03-…Wq3`-style hint: enough to recognise a key, never enough to use it."""
    if len(secret) >= 16:
        return f"{secret[:7]}…{secret[-3:]}"
    return "…" + secret[-2:] if len(secret) >= 8 else "…"
