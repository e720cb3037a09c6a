"""4. Redis away at run time: limits fail closed, or open when OCTORELAY_LIMITS_FAIL_OPEN=1."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.helpers import fresh_get, fresh_post, is_error, start_gunicorn
from tests.support.admin import AdminClient
from tests.support.constants import UPSTREAM_KEY
from tests.support.net import free_port
from tests.support.processes import base_env, migrate
from tests.support.waiting import wait_until


def start_redis(procs, port: int, tmp_path: Path, name: str):
    import shutil

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server")
    proc = procs([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(tmp_path)], cwd=tmp_path, env=base_env(), name=name)
    url_ = f"redis://127.0.0.1:{port}/0"

    def up():
        try:
            return redis.Redis.from_url(url_, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    assert wait_until(up, 10), "private redis-server did not start"
    return proc, url_


@pytest.mark.slow
def test_redis_outage_fails_closed_or_open_as_configured(env, procs, upstream, tmp_path):
    """A private redis-server is killed and restarted on the same port under two gunicorns that
    share it: one default (fail closed), one with OCTORELAY_LIMITS_FAIL_OPEN=1."""
    redis_port = free_port()
    redis_proc, redis_url = start_redis(procs, redis_port, tmp_path, "redis1")
    shared = {**env, "REDIS_URL": redis_url}
    migrate(shared)
    closed_server, closed = start_gunicorn(procs, shared, workers=2, name="fail-closed")
    open_server, opened = start_gunicorn(procs, shared, workers=1, name="fail-open",
                                         OCTORELAY_LIMITS_FAIL_OPEN="1")
    admin = AdminClient(closed)
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    limited = admin.create_key(name="limited", rpm=3)["key"]
    free = admin.create_key(name="free")["key"]
    assert fresh_post(closed, limited).status_code == 200
    assert fresh_post(closed, free).status_code == 200

    redis_proc.kill()
    for _ in range(4):  # fresh connections: both workers
        started = time.monotonic()
        assert is_error(fresh_post(closed, limited), 503, "overloaded_error")
        assert time.monotonic() - started < 5
        assert fresh_post(closed, free).status_code == 200
    for server_port in (closed, opened):
        assert fresh_get(server_port, "/healthz").status_code == 200
        ready = fresh_get(server_port, "/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error"), ready.text
    # failing open: the rpm key is admitted (the limit cannot be counted), with the error metric
    assert [fresh_post(opened, limited).status_code for _ in range(5)] == [200] * 5
    metrics = fresh_get(opened, "/metrics").text
    errors = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("octorelay_limit_store_errors_total{"))
    assert errors >= 5

    start_redis(procs, redis_port, tmp_path, "redis2")  # same port, empty state
    assert wait_until(lambda: fresh_post(closed, limited).status_code == 200, 10), "limits did not come back"
    statuses = [fresh_post(closed, limited).status_code for _ in range(3)]
    assert statuses == [200, 200, 429], statuses  # rpm=3 counts again, shared by both workers
    for server_port in (closed, opened):
        assert fresh_get(server_port, "/readyz").status_code == 200
    assert is_error(fresh_post(opened, limited), 429, "rate_limit_error")  # fail-open enforces again too
    assert closed_server.stop() == 0 and open_server.stop() == 0
