"""Settings from the environment (12-factor), checked once at start.

A bad value raises ConfigError with one line an operator can act on, so a
typo fails the boot instead of a request an hour later. Imports nothing
from the rest of the app.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Mapping


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one actionable line."""


WORKER_CLASSES = ("gthread", "gevent")
# Per worker: gevent connections (an open stream costs a greenlet, ~100 KB), gthread threads.
# gevent is the default: the benchmark (README, Performance) measured it ahead on throughput,
# and only it holds a thousand open streams without one waiting for another to end.
DEFAULT_CONCURRENCY = {"gevent": 1000, "gthread": 64}
DB_SCHEMES = ("sqlite", "postgres", "postgresql")


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    host: str = "0.0.0.0"  # HOST: 127.0.0.1 keeps octorelay on loopback (behind a local proxy)
    database_url: str = "sqlite:///octorelay.db"
    redis_url: str | None = None
    admin_token: str | None = None
    metrics_token: str | None = None  # when set, GET /metrics needs it as a bearer token
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)  # FORWARDED_ALLOW_IPS: whose X-Forwarded-For names the client
    secret_keys: tuple[str, ...] = ()
    web_concurrency: int = 1
    worker_class: str = "gevent"
    threads: int = 1000
    max_body_mb: float = 32.0
    header_timeout_s: float = 20.0  # a request's line and headers, from its first byte (app/read_deadlines.py)
    body_timeout_s: float = 20.0  # a body's start, then it must keep arriving at 8 KB/s
    count_tokens_rpm: int = 600  # count_tokens calls per key per minute
    refusal_log_per_min: int = 60  # log rows for refused requests, per key per minute per process
    journal: bool = True  # OCTORELAY_JOURNAL (0 = off): note admitted requests so a killed worker's are settled
    server_tool_reserve_usd: float = 0.25  # reserved on top of a request's worst case when it enables server tools
    max_upstream_body_mb: float = 32.0  # a non-streamed upstream answer (or error body) read whole
    anthropic_api_key: str | None = None
    log_level: str = "INFO"
    max_attempts: int = 3
    key_cache_ttl_s: float = 1.0
    limits_fail_open: bool = False
    lease_ttl_s: float = 10.0
    shutdown_grace_s: int = 25  # seconds, below the 30 s most platforms wait between SIGTERM and SIGKILL
    db_pool: int = 8  # PostgreSQL connections per worker (a budgeted key reads its totals at admission)
    spool_dir: str | None = None
    upstream_https_only: bool = False
    upstream_hosts: tuple[str, ...] = ()
    upstream_allow_link_local: bool = False  # link-local and cloud-metadata upstreams (refused by default)
    session_affinity: bool = True
    session_affinity_ttl_s: float = 3600.0
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call /v1 (("*",) = any); () = no CORS

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.split(":", 1)[0] == "sqlite"

    @property
    def serving_workers(self) -> int:
        """Workers the web process runs: WEB_CONCURRENCY with Redis; one without, since limits,
        concurrency slots and budget reservations live in process memory then."""
        return self.web_concurrency if self.redis_url else 1

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def _int(env: Mapping[str, str], name: str, default: int, lo: int = 1, hi: int = 1 << 30) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range ({lo}..{hi})")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range ({lo}..{hi})")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1 or 0)")


def _on_off(env: Mapping[str, str], name: str) -> bool:
    """A switch that is on unless set to off."""
    return _bool(env, name) if (env.get(name) or "").strip() else True


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip()


def _host(env: Mapping[str, str]) -> str:
    """The address to listen on: an IPv4 or IPv6 address (bracketed or not), or a host name."""
    raw = (_str(env, "HOST") or "0.0.0.0").strip().strip("[]")
    import ipaddress

    try:
        address = ipaddress.ip_address(raw)
        return f"[{address}]" if address.version == 6 else str(address)
    except ValueError:
        if raw and all(part.isalnum() or "-" in part for part in raw.split(".")) and " " not in raw:
            return raw
        raise ConfigError(f"HOST={raw!r} is not an address or a host name") from None


def _database_url(env: Mapping[str, str]) -> str:
    url = _str(env, "DATABASE_URL") or "sqlite:///octorelay.db"
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if "://" not in url or scheme not in DB_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL must start with sqlite:/// or postgresql:// (got scheme {scheme!r})"
        )
    if scheme == "sqlite":
        path = url.split("://", 1)[1].split("?", 1)[0][1:]  # sqlite:///rel.db -> rel.db, sqlite:////abs -> /abs
        parent = os.path.dirname(os.path.abspath(path)) if path and path != ":memory:" else None
        if parent and not os.path.isdir(parent):
            raise ConfigError(f"DATABASE_URL points into {parent}, which does not exist")
    return url


def _redis_url(env: Mapping[str, str]) -> str | None:
    url = _str(env, "REDIS_URL")
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return url


_ORIGIN = re.compile(r"https?://[a-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9a-f:.]+\](:[0-9]{1,5})?")


def _cors_origins(env: Mapping[str, str]) -> tuple[str, ...]:
    """Exact origins (`https://app.example.com`, as a browser sends them), or `*` alone."""
    raw = _str(env, "OCTORELAY_CORS_ORIGINS")
    origins = tuple(o.strip().lower() for o in (raw or "").split(",") if o.strip())
    if "*" in origins:
        if len(origins) > 1:
            raise ConfigError("OCTORELAY_CORS_ORIGINS: `*` (any origin) stands alone, not in a list")
        return origins
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"OCTORELAY_CORS_ORIGINS: {origin!r} is not an origin: scheme and host (and port) only, "
                "like https://app.example.com, no path, no trailing slash, no wildcard")
    # browsers leave a scheme's default port out of the Origin they send
    return tuple(o.removesuffix(":443") if o.startswith("https:") else o.removesuffix(":80") for o in origins)


MIN_ADMIN_TOKEN = 32


def _admin_token(env: Mapping[str, str]) -> str | None:
    """At least 32 characters: the admin token guards every key, channel and upstream secret."""
    token = _str(env, "OCTORELAY_ADMIN_TOKEN")
    if token is not None and len(token) < MIN_ADMIN_TOKEN:
        raise ConfigError(
            f"OCTORELAY_ADMIN_TOKEN is {len(token)} characters: it must be at least {MIN_ADMIN_TOKEN} "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def _log_level(env: Mapping[str, str]) -> str:
    level = (_str(env, "LOG_LEVEL") or "info").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"LOG_LEVEL={level.lower()!r} is not one of debug, info, warning, error")
    return level


def _worker_class(env: Mapping[str, str]) -> str:
    value = (_str(env, "OCTORELAY_WORKER_CLASS") or "gevent").lower()
    if value not in WORKER_CLASSES:
        raise ConfigError(f"OCTORELAY_WORKER_CLASS must be gthread or gevent (got {value!r})")
    return value


def load_settings(env: Mapping[str, str] | None = None, *, read_dotenv: bool = True) -> Settings:
    """Build Settings from `env` (default: os.environ, after reading `.env`)."""
    if env is None:
        if read_dotenv:
            from dotenv import load_dotenv

            load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
        env = os.environ
    secret = _str(env, "OCTORELAY_SECRET_KEY")
    settings = Settings(
        port=_int(env, "PORT", 8000, 1, 65535),
        host=_host(env),
        database_url=_database_url(env),
        redis_url=_redis_url(env),
        admin_token=_admin_token(env),
        metrics_token=_str(env, "OCTORELAY_METRICS_TOKEN"),
        trusted_proxies=tuple(ip.strip() for ip in (_str(env, "FORWARDED_ALLOW_IPS") or "127.0.0.1").split(",")
                              if ip.strip()),
        secret_keys=tuple(k.strip() for k in secret.split(",") if k.strip()) if secret else (),
        web_concurrency=_int(env, "WEB_CONCURRENCY", 1, 1, 256),
        worker_class=(worker_class := _worker_class(env)),
        threads=_int(env, "OCTORELAY_THREADS", DEFAULT_CONCURRENCY[worker_class], 1, 10000),
        max_body_mb=_float(env, "OCTORELAY_MAX_BODY_MB", 32.0, 0.001, 1024),
        header_timeout_s=_float(env, "OCTORELAY_HEADER_TIMEOUT_S", 20.0, 0.1, 3600.0),
        body_timeout_s=_float(env, "OCTORELAY_BODY_TIMEOUT_S", 20.0, 0.1, 3600.0),
        count_tokens_rpm=_int(env, "OCTORELAY_COUNT_TOKENS_RPM", 600, 1, 10**6),
        refusal_log_per_min=_int(env, "OCTORELAY_REFUSAL_LOG_PER_MIN", 60, 0, 10**6),
        journal=_on_off(env, "OCTORELAY_JOURNAL"),
        server_tool_reserve_usd=_float(env, "OCTORELAY_SERVER_TOOL_RESERVE_USD", 0.25, 0.0, 1000.0),
        max_upstream_body_mb=_float(env, "OCTORELAY_MAX_UPSTREAM_BODY_MB", 32.0, 0.001, 1024),
        anthropic_api_key=_str(env, "ANTHROPIC_API_KEY"),
        log_level=_log_level(env),
        max_attempts=_int(env, "OCTORELAY_MAX_ATTEMPTS", 3, 1, 20),
        key_cache_ttl_s=_float(env, "OCTORELAY_KEY_CACHE_TTL", 1.0, 0.0, 2.0),
        limits_fail_open=_bool(env, "OCTORELAY_LIMITS_FAIL_OPEN"),
        lease_ttl_s=_float(env, "OCTORELAY_LEASE_TTL", 10.0, 1.0, 3600.0),
        shutdown_grace_s=_int(env, "OCTORELAY_SHUTDOWN_GRACE_S", 25, 1, 3600),
        db_pool=_int(env, "OCTORELAY_DB_POOL", 8, 1, 1000),
        spool_dir=_str(env, "OCTORELAY_SPOOL_DIR"),
        upstream_https_only=_bool(env, "OCTORELAY_UPSTREAM_HTTPS_ONLY"),
        upstream_hosts=tuple(h.strip().lower() for h in (_str(env, "OCTORELAY_UPSTREAM_HOSTS") or "").split(",")
                             if h.strip()),
        upstream_allow_link_local=_bool(env, "OCTORELAY_UPSTREAM_ALLOW_LINK_LOCAL"),
        session_affinity=_on_off(env, "OCTORELAY_SESSION_AFFINITY"),
        session_affinity_ttl_s=_float(env, "OCTORELAY_SESSION_AFFINITY_TTL", 3600.0, 0.001, 86400.0),
        cors_origins=_cors_origins(env),
    )
    return settings
