"""gunicorn settings from the environment (API.md §2). The top-level gunicorn.conf.py loads this."""
import os

from app.cli import check_settings

wsgi_app = "app:create_app()"
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1") or 1)
worker_class = os.environ.get("OCTORELAY_WORKER_CLASS", "gthread") or "gthread"
threads = int(os.environ.get("OCTORELAY_THREADS", "64") or 64)
# gevent: connections per worker; gthread: open (keep-alive) connections per worker
worker_connections = threads if worker_class == "gevent" else max(1000, threads * 4)
timeout = 120  # gthread heartbeat; long streams don't block it
graceful_timeout = 60
keepalive = 75
# Claude Code sends long anthropic-beta headers; allow header values up to 16 KB.
limit_request_line = 16384
limit_request_field_size = 32768
limit_request_fields = 200
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"
loglevel = (os.environ.get("LOG_LEVEL") or "info").lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):
    """Refuse to boot on bad configuration with one line, before any worker forks."""
    check_settings()
