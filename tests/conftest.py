"""Shared fixtures: an app on a fresh database (SQLite, or PostgreSQL when
OCTORELAY_TEST_DATABASE_URL is set), its test client, the admin client, a key, and the fixtures
of tests/support (the scripted upstream, a browser, processes). Helpers live in tests/support."""
from __future__ import annotations

import pytest

from app import create_app
from app.db import db, upgrade
from app.logs import JsonFormatter
from app.state import services
from tests.support.admin import AdminClient
from tests.support.app import SettlingClient, flush_redis, reset_postgres, serving
from tests.support.browser import (browser, tab)  # noqa: F401  (fixtures: headless Chromium, one browser for the session)
from tests.support.claude_code import claude_bin  # noqa: F401  (fixture: the Claude Code binary, or a skip)
from tests.support.cli_harness import runner  # noqa: F401  (fixture: `octorelay ...` in-process)
from tests.support.constants import ADMIN_TOKEN, PG_URL, REDIS_URL, SECRET_KEY, SECRETS_USED
from tests.support.logs import captured_logs
from tests.support.net import free_port
from tests.support.processes import procs  # noqa: F401  (fixture: processes stopped at teardown)
from tests.support.upstream import upstream  # noqa: F401  (fixture: a scripted upstream on loopback)

ROUTING_SEED = 15  # weighted-random routing in every in-process app draws from Random(ROUTING_SEED)


@pytest.fixture(scope="session", autouse=True)
def secret_audit():
    """Greps every octorelay log line written during the whole run for the secrets it used."""
    with captured_logs("octorelay", formatter=JsonFormatter()) as lines:
        yield
    leaked = sorted({secret for secret in SECRETS_USED for line in lines if secret in line})
    assert not leaked, f"secrets or prompt text in the logs: {leaked}"


@pytest.fixture
def database_url(tmp_path):
    if PG_URL:
        reset_postgres(PG_URL)
        return PG_URL
    return f"sqlite:///{tmp_path}/octorelay.db"


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


@pytest.fixture
def app(env):
    app = create_app(env)
    app.test_client_class = SettlingClient
    services(app).relay.directory.rng.seed(ROUTING_SEED)  # the same weighted order on every run
    upgrade(db.obj)
    yield app
    services(app).close()


@pytest.fixture
def make_app():
    """Apps of a test's own (other settings, another worker): `make_app(config)` is create_app,
    and every app made is closed at teardown, its threads, pools and sockets with it."""
    made = []

    def build(config):
        made.append(create_app(config))
        return made[-1]
    yield build
    for app in reversed(made):
        services(app).close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(client):
    """The admin API, in-process, with the admin token."""
    return AdminClient(client)


@pytest.fixture
def key(admin):
    """A client key with no limits (the created object: `key["key"]` is the secret)."""
    return admin.create_key(name="k")


@pytest.fixture
def live(app):
    """The app on a real loopback socket: for SDK and disconnect tests."""
    with serving(app) as url:
        yield url
