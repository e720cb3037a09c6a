"""gunicorn settings from the environment (docs/api.md, Running it). The top-level gunicorn.conf.py loads this."""
import os
import shutil
import tempfile

from app.startup import settings_or_exit

_settings = settings_or_exit()  # bad configuration: one line, exit 2, before anything starts

wsgi_app = "app:create_app()"
bind = f"{_settings.host}:{_settings.port}"  # HOST=127.0.0.1 for a loopback-only deployment
workers = _settings.serving_workers  # one without REDIS_URL, whatever WEB_CONCURRENCY says (logged at start)
# Our subclasses of gunicorn's workers: gevent's does not wait out idle keep-alives at SIGTERM;
# both end what is still open shortly before the grace runs out (app/shutdown.py).
worker_class = "app.gevent_worker.Worker" if _settings.worker_class == "gevent" else "app.gthread_worker.Worker"
threads = _settings.threads
# gevent: connections per worker; gthread: open (keep-alive) connections per worker
worker_connections = threads if _settings.worker_class == "gevent" else max(1000, threads * 4)
timeout = 120  # gthread heartbeat; long streams don't block it
# SIGTERM to exit (the master SIGKILLs workers still there): below the platform's own window
graceful_timeout = _settings.shutdown_grace_s
keepalive = 75
# Header values up to 16 KB (docs/api.md; Claude Code's longest anthropic-beta is a few KB), in at
# most 48 fields (clients send 20-35, a proxy's included): a header block is at most ~800 KB, the
# total gunicorn's defaults allow. Reading a block costs more than linearly (issue 22: 200 fields of
# 32 KB let one 6 MB block cost a worker 4.6 s of CPU). Past these limits gunicorn answers 431
# (414 for the request line; 8190 is gunicorn's maximum for it).
limit_request_line = 8190
limit_request_field_size = 16384 + 256  # the value, its name, ": " and CRLF
limit_request_fields = 48
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"
logger_class = "app.gunicorn_logger.JsonLogger"  # gunicorn's lines as JSON too, like the app's
loglevel = _settings.log_level.lower()
control_socket_disable = True  # unused; several instances on one host would fight over it
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# Workers write Prometheus metrics to files in this folder; /metrics sums them.
# Set here, in the master, so every forked worker inherits it.
_METRICS_DIR_OWNED = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _METRICS_DIR_OWNED:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="octorelay-metrics-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _METRICS_DIR_OWNED:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker):
    """Everything loaded so far lives as long as the worker: move it out of the collector's
    sight, so a full collection under load scans only request garbage (measured: one 57 ms
    pause per few thousand requests became 3 ms, and every open stream waits out that pause)."""
    import gc

    gc.freeze()


def worker_exit(server, worker):
    """Write the settlements still queued before the worker goes (atexit would too; this is explicit)."""
    from app.gunicorn_logger import drop_handlers
    from app.shutdown import flush_at_exit

    flush_at_exit(getattr(worker, "wsgi", None))
    drop_handlers()  # last: nothing logs after this in the worker


def on_starting(server):
    """Log the PostgreSQL connection budget (workers x pool) and warn when the server cannot
    hold it. In the master, before any worker: it must not import peewee (gevent patches later)."""
    from app.pg_budget import check

    if workers < _settings.web_concurrency:
        server.log.warning(
            f"WEB_CONCURRENCY={_settings.web_concurrency} but REDIS_URL is not set: serving with 1 worker "
            "(without Redis, rate limits, concurrency slots and budget reservations live in one "
            "process's memory); set REDIS_URL to run more workers")
    check(_settings, workers, server.log)
    if _settings.redis_url:
        _say_if_redis_is_down(server.log)


def _say_if_redis_is_down(log) -> None:
    """A dead Redis at start is said at start (and by /readyz), not discovered by the first 503.
    A plain socket PING: importing redis here, in the master, would import asyncio and ssl before
    the gevent workers patch them."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(_settings.redis_url or "")
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=1) as sock:
            if url.scheme == "redis":  # rediss:// is TLS: reaching the port is what can be checked here
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
                if not answer.startswith((b"+PONG", b"-NOAUTH", b"-ERR")):  # an auth error still answers
                    raise OSError(f"unexpected answer {answer[:20]!r}")
    except OSError as exc:
        log.warning(f"REDIS_URL does not answer ({type(exc).__name__}): keys with rate limits, concurrency "
                    "limits or budgets get 503 until it does; /readyz says so too")
