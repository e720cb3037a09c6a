"""Shared fixtures: an app on a fresh database (SQLite, or PostgreSQL when
OCTORELAY_TEST_DATABASE_URL is set), its test client, and admin helpers."""
from __future__ import annotations

import logging
import os
import socket

import pytest
from flask.testing import FlaskClient

from app import create_app
from app.db import db, open_database, upgrade
from tests.upstream import upstream  # noqa: F401  (fixture: a scripted upstream on loopback)
from tests.browser import browser, tab  # noqa: F401  (fixtures: headless Chromium, one browser for the session)

ADMIN_TOKEN = "test-admin-token-9f2c1b-7e4a-4d2b-a8c3-51f0"  # 32+ characters, as required
SECRET_KEY = "q2mS6yQ7n5bH0uF8YJwHk0j3QvZr2m1Ck9yXG1p4e6U="  # a fixed Fernet key for tests
PROMPT_CANARY = "PROMPT-CANARY-7d1f"  # prompt and answer text some tests send: never in any log
ANSWER_CANARY = "ANSWER-CANARY-93ab"
PG_URL = os.environ.get("OCTORELAY_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("OCTORELAY_TEST_REDIS_URL")


# Every secret and canary the suite uses; the session's octorelay logs must contain none of them.
SECRETS_USED: set[str] = {ADMIN_TOKEN, SECRET_KEY, PROMPT_CANARY, ANSWER_CANARY}


@pytest.fixture(scope="session", autouse=True)
def secret_audit():
    """Greps every octorelay log line written during the whole run for the secrets it used."""
    from app.logs import JsonFormatter

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))
    logger = logging.getLogger("octorelay")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    leaked = sorted({secret for secret in SECRETS_USED for line in lines if secret in line})
    assert not leaked, f"secrets or prompt text in the logs: {leaked}"


def reset_postgres(url: str) -> None:
    database = open_database(url, pooled=False)
    with database.connection_context():
        database.execute_sql("DROP SCHEMA public CASCADE")
        database.execute_sql("CREATE SCHEMA public")
    database.close()


@pytest.fixture
def database_url(tmp_path):
    if PG_URL:
        reset_postgres(PG_URL)
        return PG_URL
    return f"sqlite:///{tmp_path}/octorelay.db"


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture
def env(database_url, tmp_path):
    """Environment variables for an octorelay under test (also handed to subprocesses)."""
    out = {
        "OCTORELAY_SPOOL_DIR": str(tmp_path),  # a spool of this test's own
        "DATABASE_URL": database_url,
        "OCTORELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "OCTORELAY_SECRET_KEY": SECRET_KEY,
        "LOG_LEVEL": "info",
    }
    if REDIS_URL:
        flush_redis(REDIS_URL)  # limit counters are keyed by key id, which restarts at 1
        out["REDIS_URL"] = REDIS_URL
    return out


@pytest.fixture
def redis_url(tmp_path):
    """A Redis for tests that need shared state (several workers): OCTORELAY_TEST_REDIS_URL, or a
    private redis-server on a loopback port; skipped when neither is available."""
    import shutil
    import subprocess
    import time

    import redis

    if REDIS_URL:
        flush_redis(REDIS_URL)
        yield REDIS_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs Redis: set OCTORELAY_TEST_REDIS_URL or install redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_timeout=0.5).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    pytest.fail("private redis-server did not start")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class SettlingClient(FlaskClient):
    """Waits for the background settlement writer after each request, so a test can read the
    log row and charge of a non-streaming request at once (streams: see wait_for_row)."""

    def open(self, *args, **kwargs):
        resp = super().open(*args, **kwargs)
        settled(self.application)
        return resp


def settled(app) -> None:
    """Block until every settlement the app has queued is committed."""
    assert app.extensions["octorelay.relay"].ledger.flush(timeout=10), "settlements not written in 10 s"


@pytest.fixture
def app(env):
    app = create_app(env)
    app.test_client_class = SettlingClient
    upgrade(db.obj)
    yield app
    app.extensions["octorelay.relay"].ledger.close()
    db.obj.close_all()


@pytest.fixture
def client(app):
    return app.test_client()


class Admin:
    """Calls the admin API with the token; returns the werkzeug test response."""

    def __init__(self, client):
        self.client = client
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def __getattr__(self, method):
        def call(path, **kwargs):
            headers = {**self.headers, **kwargs.pop("headers", {})}
            return getattr(self.client, method)(path, headers=headers, **kwargs)
        return call

    def create_key(self, **fields):
        fields.setdefault("name", "test")
        resp = self.post("/admin/keys", json=fields)
        assert resp.status_code == 201, resp.get_json()
        SECRETS_USED.add(resp.get_json()["key"])
        return resp.get_json()

    def create_channel(self, **fields):
        fields.setdefault("name", "mock")
        fields.setdefault("type", "mock")
        fields.setdefault("models", ["claude-*"])
        resp = self.post("/admin/channels", json=fields)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()


@pytest.fixture
def admin(client):
    return Admin(client)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture
def live(app):
    """The app on a real loopback socket (threaded werkzeug server): for SDK and disconnect tests."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def wait_for_row(timeout: float = 5.0):
    """The (only) log row: a stream settles in its generator's `finally`, which may run a
    moment after the client has read the last event."""
    import time

    from app.models import RequestLog

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = RequestLog.get_or_none()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError("no log row was written")


UPSTREAM_KEY = "sk-ant-api03-upstream-test-key-5f1e2d3c4b5a69788796"
SECRETS_USED.add(UPSTREAM_KEY)


def anthropic_channel(admin, upstream, **fields) -> dict:
    """An `anthropic` channel pointed at the scripted upstream."""
    fields.setdefault("name", f"up-{len(admin.get('/admin/channels').get_json()['data'])}")
    return admin.create_channel(type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                                **{"models": ["claude-*"], **fields})
