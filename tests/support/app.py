"""In-process helpers: the test client that waits for settlements, the app on a loopback socket,
Anthropic's error shape, the log row of a stream, a channel pointed at the scripted upstream, and
resetting the test backends."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from flask.testing import FlaskClient

from app.db import open_database
from app.state import services
from tests.support.constants import UPSTREAM_KEY


class SettlingClient(FlaskClient):
    """Waits for the background settlement writer after each request, so a test can read the
    log row and charge of a non-streaming request at once (streams: see wait_for_row)."""

    def open(self, *args, **kwargs):
        resp = super().open(*args, **kwargs)
        settled(self.application)
        return resp


def settled(app) -> None:
    """Block until every settlement the app has queued is committed."""
    assert services(app).relay.flush(timeout=10), "settlements not written in 10 s"


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """The app on a real loopback socket (threaded werkzeug server); yields its base URL. The
    listening socket is closed on the way out: a suite of a thousand tests must not keep them."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def assert_error(resp, status: int, error_type: str, *, contains: str | None = None) -> dict:
    """The response is Anthropic's error shape with a matching request id."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    body = resp.get_json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"].startswith("req_")
    assert resp.headers["request-id"] == body["request_id"]
    if contains is not None:
        assert contains in body["error"]["message"], body["error"]["message"]
    return body


def wait_for_row(timeout: float = 5.0):
    """The (only) log row: a stream settles in its generator's `finally`, which may run a
    moment after the client has read the last event."""
    from app.models import RequestLog

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = RequestLog.get_or_none()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError("no log row was written")


def anthropic_channel(admin, upstream, **fields) -> dict:
    """An `anthropic` channel pointed at the scripted upstream."""
    fields.setdefault("name", f"up-{len(admin.get('/admin/channels').get_json()['data'])}")
    return admin.create_channel(type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                                **{"models": ["claude-*"], **fields})


def reset_postgres(url: str) -> None:
    database = open_database(url, pooled=False)
    with database.connection_context():
        database.execute_sql("DROP SCHEMA public CASCADE")
        database.execute_sql("CREATE SCHEMA public")
    database.close()


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
