"""A bare Flask + requests pass-through proxy: the cost of the stack before any octorelay logic.

No auth, no routing, no limits, no accounting, no logging. It forwards POST /v1/messages (and
anything under /v1/) to $BARE_UPSTREAM with the client's anthropic-* headers, over one pooled
HTTPAdapter shared by the worker's threads (a thin Session per thread, like octorelay's
transport), and streams the answer back chunk by chunk with a generator.

    BARE_UPSTREAM=http://127.0.0.1:18001 gunicorn -c bench/bare_proxy.py --chdir bench -b 127.0.0.1:18002 \
        # BARE_WORKER_CLASS (gthread | gevent), BARE_WORKERS, BARE_THREADS set the shape (default 1 x 64 gthread)

It doubles as its own gunicorn config (the settings below mirror app/gunicorn_config.py, so the
bare proxy runs in the same shape as the octorelay row it is compared with): under gevent
BARE_THREADS is the worker's worker_connections, like OCTORELAY_THREADS; the upstream pool holds
BARE_THREADS connections (BARE_POOL overrides), like octorelay's HttpTransport(pool_size=threads).
Under gevent the gunicorn worker monkey-patches before it imports this module as the app, so
threading.local is per greenlet and the pool's sockets and locks are gevent's.
"""
from __future__ import annotations

import os
import threading

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

UPSTREAM = os.environ.get("BARE_UPSTREAM", "http://127.0.0.1:18001").rstrip("/")

app = Flask(__name__)
_adapter = HTTPAdapter(pool_connections=16,
                       pool_maxsize=int(os.environ.get("BARE_POOL") or os.environ.get("BARE_THREADS") or "64"),
                       max_retries=0, pool_block=False)
_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False
        session.mount("http://", _adapter)
        _local.session = session
    return session


@app.post("/v1/<path:path>")
def relay(path):
    headers = {k: v for k, v in request.headers.items() if k.lower().startswith("anthropic-")}
    headers["content-type"] = "application/json"
    resp = _session().post(f"{UPSTREAM}/v1/{path}", data=request.get_data(), headers=headers,
                           stream=True, timeout=(10, 600), allow_redirects=False)
    content_type = resp.headers.get("content-type", "application/json")
    if content_type.startswith("text/event-stream"):
        def gen():
            try:
                yield from resp.raw.read_chunked(decode_content=False) if resp.raw.chunked \
                    else resp.iter_content(chunk_size=None)
            finally:
                resp.close()
        return Response(gen(), status=resp.status_code,
                        headers={"content-type": content_type, "cache-control": "no-cache"})
    body = resp.content
    resp.close()
    return Response(body, status=resp.status_code, headers={"content-type": content_type})


# gunicorn settings (used with `gunicorn -c bench/bare_proxy.py`) ------------------------------
wsgi_app = "bare_proxy:app"
worker_class = os.environ.get("BARE_WORKER_CLASS", "gthread")
workers = int(os.environ.get("BARE_WORKERS", "1"))
threads = int(os.environ.get("BARE_THREADS", "64"))
# gevent: connections per worker; gthread: open (keep-alive) connections per worker (as octorelay)
worker_connections = threads if worker_class == "gevent" else max(1000, threads * 4)
timeout = 120
keepalive = 75
accesslog = None
errorlog = "-"
loglevel = "warning"
