"""The soak's own PostgreSQL database (created if missing, its schema reset)."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from bench.soak.settings import SetupError


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def ensure_postgres_database(url: str, reset: bool) -> None:
    """Create the database when missing; with `reset`, empty its public schema (the soak's own)."""
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SetupError("DATABASE_URL names no database")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    try:
        conn = psycopg2.connect(admin_url, connect_timeout=5)
    except psycopg2.Error as exc:
        raise SetupError(f"PostgreSQL at {redact(admin_url)} is unavailable: {exc}".strip()) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return
    finally:
        conn.close()
    if reset:
        conn = psycopg2.connect(url, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("DROP SCHEMA public CASCADE")
                cur.execute("CREATE SCHEMA public")
        finally:
            conn.close()
