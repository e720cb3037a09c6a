"""octorelay: a self-hosted relay for the Claude Messages API.

`create_app()` builds the WSGI app; nothing is built at import time.
"""
from __future__ import annotations

from typing import Mapping

from flask import Flask

from .config import Settings, load_settings


def create_app(config: Mapping[str, str] | Settings | None = None) -> Flask:
    """Build the app from the environment, or from `config` (env-style mapping or Settings)."""
    from . import db, web
    from .crypto import SecretBox, secret_keys_for
    from .logs import configure_logging
    from .services.admin_guard import AdminGuard
    from .services.auth import KeyCache
    from .services.changes import change_feed
    from .services.channels import UpstreamPolicy
    from .services.refusals import RefusalLog
    from .state import AppServices, attach

    if isinstance(config, Settings):
        settings = config
    elif config is not None:
        settings = load_settings(config)
    else:
        settings = load_settings()

    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config.update(
        OCTORELAY=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        PROVIDE_AUTOMATIC_OPTIONS=False,  # OPTIONS on a route is a 405 like any other method
    )
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # `//` is a 404, not a redirect built from the Host header
    box = SecretBox(secret_keys_for(settings))
    policy = UpstreamPolicy(settings.upstream_https_only, settings.upstream_hosts, settings.upstream_allow_link_local)
    feed = change_feed()  # admin writes in force for the next request (services/changes.py)
    redis_client = _redis_client(settings)
    relay = _relay(settings, box, redis_client, policy, feed)
    services = AppServices(
        secrets=box, upstream_policy=policy,
        key_cache=KeyCache(ttl=settings.key_cache_ttl_s, feed=feed), redis=redis_client,
        admin_guard=AdminGuard(redis_client, settings.trusted_proxies), relay=relay,
        refusals=RefusalLog(relay.ledger, settings.refusal_log_per_min))
    attach(app, services)
    services.database = db.init_app(app, settings)
    web.init_app(app)
    return app


def _relay(settings: Settings, box, redis_client, policy, feed):
    from .channel_types import build_transports
    from .metrics import record_request
    from .services.accounting import Ledger
    from .services.limiter import Limiter
    from .services.pricing import PriceBook
    from .services.relay import Relay
    from .services.routing import ChannelDirectory
    from .services.spool import Spool, spool_path
    from .upstream.transport import HttpTransport

    http = HttpTransport(pool_size=settings.threads, max_body_bytes=int(settings.max_upstream_body_mb * 2 ** 20))
    transports = build_transports(http)  # channel type -> transport
    limiter = Limiter(redis_client, fail_open=settings.limits_fail_open,
                      lease_ttl_s=settings.lease_ttl_s)
    ledger = Ledger(PriceBook(feed), Spool(spool_path(settings.database_url, settings.spool_dir)))
    directory = ChannelDirectory(box, ttl=settings.key_cache_ttl_s, policy=policy, feed=feed)
    return Relay(directory, ledger, transports, limiter,
                 max_attempts=settings.max_attempts, count_tokens_rpm=settings.count_tokens_rpm,
                 server_tool_reserve_nanos=int(settings.server_tool_reserve_usd * 1e9), journal=settings.journal,
                 on_settled=[record_request],
                 affinity=_affinity(settings, redis_client))


def _affinity(settings: Settings, redis_client):
    from .services.affinity import Affinity, LocalStore
    from .services.affinity_redis import RedisStore

    ttl = settings.session_affinity_ttl_s
    store = RedisStore(redis_client, ttl) if redis_client is not None else LocalStore(ttl)
    return Affinity(store, enabled=settings.session_affinity)


def _redis_client(settings: Settings):
    if not settings.redis_url:
        return None
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
