"""octorelay as real processes: `octorelay up`, `gunicorn -c gunicorn.conf.py`, bad config, secrets in logs and DB.

Every process is started in its own session, every wait has a deadline, and
every process is stopped (SIGTERM, then SIGKILL to its group) in teardown.
"""
from __future__ import annotations

import fnmatch
import json
import secrets
import signal
import stat
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from tests.support.admin import AdminClient
from tests.support.constants import ADMIN_TOKEN, PG_URL
from tests.support.net import free_port, url
from tests.support.processes import (GUNICORN, OCTORELAY, REPO, base_env, get, serve_gunicorn,
                                     wait_for_key_line, wait_until_serving)

pytestmark = pytest.mark.slow

def model_ids(port: int, key: str, **headers) -> list[str]:
    resp = get(port, "/v1/models?limit=1000", **{"x-api-key": key, **headers})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert resp.headers["request-id"].startswith("req_")
    assert body["has_more"] is False
    return [m["id"] for m in body["data"]]


def assert_models_served(port: int, key: str) -> None:
    for headers in ({"x-api-key": key}, {"Authorization": f"Bearer {key}"}):
        resp = get(port, "/v1/models?limit=1000", **headers)
        assert resp.status_code == 200, resp.text
        ids = [m["id"] for m in resp.json()["data"]]
        assert ids, resp.text
        assert all(fnmatch.fnmatchcase(i, "claude-*") for i in ids), ids
        assert "claude-sonnet-4-5" in ids


def assert_probes_ok(port: int) -> None:
    health = get(port, "/healthz")
    assert health.status_code == 200, health.text
    assert health.headers["request-id"].startswith("req_")
    ready = get(port, "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


def one_error_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("octorelay: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr


# 1. octorelay up -------------------------------------------------------------------

def test_up_bootstraps_once_and_serves_the_printed_key(env, tmp_path, procs):
    cwd = tmp_path / "run"
    cwd.mkdir()
    port = free_port()
    server_env = base_env(**env, PORT=str(port))

    first = procs([OCTORELAY, "up"], cwd=cwd, env=server_env, name="up1")
    key = wait_for_key_line(first)
    wait_until_serving(first, port)
    out = first.stdout
    assert out.count("sk-octo-") == 1, out
    assert "DEMO MODE" in out and "MOCK" in out, out
    assert "applied migration" in out
    assert_models_served(port, key)
    assert_probes_ok(port)
    assert first.stop() == 0, first.stderr
    # a clean stop prints no traceback (gevent's _removeHandlerRef once did at worker exit)
    assert "Traceback" not in first.stderr and "Exception ignored" not in first.stderr, first.stderr

    port = free_port()
    second = procs([OCTORELAY, "up"], cwd=cwd, env={**server_env, "PORT": str(port)}, name="up2")
    wait_until_serving(second, port)
    out = second.stdout
    assert "sk-octo-" not in out, out
    assert "first start" not in out and "DEMO MODE" not in out and "applied migration" not in out, out
    assert_models_served(port, key)  # the first key still works
    keys = AdminClient(port)("GET", "/admin/keys").json()["data"]
    assert len(keys) == 1 and keys[0]["name"] == "default"
    assert second.stop() == 0, second.stderr


def test_up_with_no_database_url_uses_sqlite_in_cwd_and_a_0600_secret_file(tmp_path, procs):
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    port = free_port()
    server_env = base_env(PORT=str(port), OCTORELAY_ADMIN_TOKEN=ADMIN_TOKEN)

    proc = procs([OCTORELAY, "up"], cwd=cwd, env=server_env, name="up")
    key = wait_for_key_line(proc)
    wait_until_serving(proc, port)
    assert "DEMO MODE" in proc.stdout

    db_file = cwd / "octorelay.db"
    secret_file = cwd / "octorelay.db.secret"
    assert db_file.is_file()
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    Fernet(secret_file.read_text().strip().encode())  # a valid Fernet key

    assert_models_served(port, key)
    assert_probes_ok(port)
    listed = AdminClient(port)("GET", "/admin/keys")
    assert listed.status_code == 200
    assert key not in listed.text
    channels = AdminClient(port)("GET", "/admin/channels").json()["data"]
    assert [(c["type"], c["models"]) for c in channels] == [("mock", ["claude-*"])]
    assert proc.stop() == 0, proc.stderr


# 2. several workers: revocation and permission changes reach all of them within 2 s --------

def poll_until_settled(port: int, key: str, since: float, *, settle_after: float = 2.0,
                       need: int = 30, timeout: float = 8.0) -> list[tuple[float, requests.Response]]:
    """GET /v1/models on fresh connections from `since` on, until `need` requests were sent after
    since + settle_after. Returns (start time, response) pairs."""
    seen: list[tuple[float, requests.Response]] = []
    deadline = since + timeout
    while sum(1 for t, _ in seen if t >= since + settle_after) < need:
        assert time.monotonic() < deadline, "polling took too long"
        started = time.monotonic()
        seen.append((started, get(port, "/v1/models?limit=1000", **{"x-api-key": key})))
        time.sleep(0.005)
    return seen


def first_settled(seen, good) -> float:
    """The start time of the run of `good` responses that lasts to the end."""
    at = None
    for started, resp in seen:
        if good(resp):
            at = started if at is None else at
        else:
            at = None
    return at


def is_auth_error(resp: requests.Response) -> bool:
    return (resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
            and resp.json()["request_id"] == resp.headers.get("request-id"))


def test_gunicorn_workers_see_revocation_and_model_changes_within_2s(env, procs, redis_url):
    served = serve_gunicorn(procs, {**env, "REDIS_URL": redis_url}, workers=2)
    server, port, admin = served.proc, served.port, served.admin
    admin.create_channel()
    doomed = admin.create_key(name="doomed")
    narrowed = admin.create_key(name="narrowed")

    # warm both workers' key caches: many requests, each on a new connection
    for _ in range(40):
        for key in (doomed["key"], narrowed["key"]):
            assert "claude-sonnet-4-5" in model_ids(port, key)

    assert admin("DELETE", f"/admin/keys/{doomed['id']}").status_code == 204
    revoked_at = time.monotonic()
    seen = poll_until_settled(port, doomed["key"], revoked_at)
    late = [(round(t - revoked_at, 3), r.status_code) for t, r in seen
            if t >= revoked_at + 2.0 and not is_auth_error(r)]
    assert not late, f"still accepted after 2 s: {late}"
    settled = first_settled(seen, is_auth_error)
    assert settled is not None and settled - revoked_at <= 2.0, settled and settled - revoked_at
    assert "revoked" in seen[-1][1].json()["error"]["message"]

    # narrowing a key's models: its /v1/models changes within 2 s on every worker
    resp = admin("PATCH", f"/admin/keys/{narrowed['id']}", json={"models": ["no-such-model-*"]})
    assert resp.status_code == 200, resp.text
    patched_at = time.monotonic()

    def is_empty(r):
        return r.status_code == 200 and r.json()["data"] == []

    seen = poll_until_settled(port, narrowed["key"], patched_at, need=20)
    late = [round(t - patched_at, 3) for t, r in seen if t >= patched_at + 2.0 and not is_empty(r)]
    assert not late, f"old model list after 2 s: {late}"
    settled = first_settled(seen, is_empty)
    assert settled is not None and settled - patched_at <= 2.0
    assert server.stop() == 0, server.stderr


# 3. bad configuration at start: one line, non-zero exit, no traceback ----------------

BAD_CONFIGS = {
    "bogus-worker-class": {"OCTORELAY_WORKER_CLASS": "bogus"},
    "mysql": {"DATABASE_URL": "mysql://x"},
    "threads-not-a-number": {"OCTORELAY_THREADS": "many"},
    # docs/api.md, Running it: with PostgreSQL and no OCTORELAY_SECRET_KEY, refuse to start
    "postgres-without-secret": {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
                                "OCTORELAY_SECRET_KEY": ""},
    "secret-not-fernet": {"OCTORELAY_SECRET_KEY": "not-a-fernet-key"},
    "sqlite-dir-missing": {"DATABASE_URL": "sqlite:////no/such/dir/x.db"},
}
COMMANDS = {
    "gunicorn": [GUNICORN, "-c", "gunicorn.conf.py"],
    "up": [OCTORELAY, "up"],
    "db-upgrade": [OCTORELAY, "db", "upgrade"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("bad", list(BAD_CONFIGS))
def test_bad_config_refuses_to_start_with_one_error_line(env, procs, command, bad):
    port = free_port()
    proc_env = base_env(**{**env, "PORT": str(port), **BAD_CONFIGS[bad]})
    proc = procs(COMMANDS[command], cwd=REPO, env=proc_env, name=command)
    returncode = proc.wait_exit(timeout=20)  # fails the test (and kills the group) past 20 s
    assert returncode != 0, (proc.stdout, proc.stderr)
    one_error_line(proc.stderr)
    with pytest.raises(requests.RequestException):
        get(port, "/healthz", timeout=0.5)


UNREACHABLE_DATABASES = {
    "refused": "postgresql://postgres:pw@127.0.0.1:{port}/x",
    "unknown-host": "postgresql://postgres:pw@no-such-host.invalid/x",
    "missing-database": "postgresql://postgres@127.0.0.1:5432/no_such_database_here",
}


@pytest.mark.parametrize("command", ["up", "db-upgrade"])
@pytest.mark.parametrize("case", list(UNREACHABLE_DATABASES))
def test_a_database_that_cannot_be_used_is_one_line(env, procs, command, case):
    if case == "missing-database" and not PG_URL:
        pytest.skip("needs a PostgreSQL server (OCTORELAY_TEST_DATABASE_URL)")
    url = UNREACHABLE_DATABASES[case].format(port=free_port())
    proc = procs(COMMANDS[command], cwd=REPO, env=base_env(**{**env, "DATABASE_URL": url}), name=command)
    assert proc.wait_exit(timeout=30) != 0
    one_error_line(proc.stderr)
    assert "cannot use the database" in proc.stderr and "pw@" not in proc.stderr


# 4. secrets never reach the logs or the database in plaintext ----------------------

def database_text(database_url: str) -> bytes:
    """Everything stored: the SQLite file and its WAL, or every row of every PostgreSQL table."""
    if database_url.startswith("sqlite"):
        path = Path(database_url.split(":///", 1)[1])
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [row[0] for row in cur.fetchall()]
            dump = []
            for table in tables:
                cur.execute(f'SELECT * FROM "{table}"')
                dump.append(repr(cur.fetchall()))
        assert {"api_key", "channel"} <= set(tables), tables
        return "\n".join(dump).encode()
    finally:
        conn.close()


def test_secrets_stay_out_of_logs_and_database(env, procs):
    served = serve_gunicorn(procs, env, workers=1)
    server, port, admin = served.proc, served.port, served.admin

    upstream_secret = f"SECRETUPSTREAM-{secrets.token_hex(12)}"
    upstream_key = f"sk-ant-api03-{upstream_secret}"
    client = admin.create_key(name="secretive")
    client_key = client["key"]
    client_secret = client_key[len(client["key_prefix"]):]
    channel = admin.create_channel(name="upstream", type="anthropic", api_key=upstream_key,
                                   models=["claude-*"])
    assert upstream_secret not in json.dumps(channel)
    assert upstream_secret not in admin("GET", "/admin/channels").text

    assert "claude-sonnet-4-5" in model_ids(port, client_key)
    assert "claude-sonnet-4-5" in model_ids(port, "", Authorization=f"Bearer {client_key}")
    wrong_key = "sk-octo-" + secrets.token_urlsafe(32)
    resp = get(port, "/v1/models", **{"x-api-key": wrong_key})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    wrong_token = ADMIN_TOKEN + "-wrong"
    resp = AdminClient(port, token=wrong_token)("GET", "/admin/keys")
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    assert server.stop() == 0

    logs = server.stdout + server.stderr
    for secret in (client_key, client_secret, upstream_key, upstream_secret, ADMIN_TOKEN,
                   wrong_key, wrong_token):
        assert secret not in logs, f"{secret!r} leaked into the logs"

    stored = database_text(env["DATABASE_URL"])
    assert channel["name"].encode() in stored  # we are looking at the right database
    for secret in (client_key, client_secret, upstream_key, upstream_secret):
        assert secret.encode() not in stored, f"{secret!r} stored in plaintext"

    access = []
    for line in server.stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("logger") == "octorelay.access":
                access.append(record)
    assert len(access) >= 6, server.stderr
    for record in access:
        for field in ("request_id", "route", "status", "latency_ms", "key_id"):
            assert field in record, record
        assert record["request_id"].startswith("req_")
        assert isinstance(record["status"], int)
        assert isinstance(record["latency_ms"], (int, float))
        assert "key" not in record
        assert not any(isinstance(v, str) and ("sk-octo-" in v or "sk-ant-" in v) for v in record.values())
    by_outcome = {(r["route"], r["status"], r["key_id"]) for r in access}
    assert ("/v1/models", 200, client["id"]) in by_outcome, by_outcome
    assert ("/v1/models", 401, None) in by_outcome, by_outcome
    assert any(route.startswith("/admin/keys") and status == 401 for route, status, _ in by_outcome)


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_sigterm_is_not_held_up_by_idle_keep_alive_connections(env, procs, worker_class):
    """A deploy's SIGTERM: an idle keep-alive connection (a client pool between requests) must
    not keep the worker alive until keepalive or graceful_timeout runs out."""
    served = serve_gunicorn(procs, env, worker_class=worker_class)
    server, port = served.proc, served.port
    assert f"Using worker: app.{worker_class}_worker.Worker" \
        in server.stderr
    with requests.Session() as idle:  # keeps its connection open after the answer
        assert idle.get(url(port, "/healthz"), timeout=5).status_code == 200
        server.popen.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert server.wait_exit(timeout=15) == 0, server.stderr
        assert time.monotonic() - started < 10


def test_a_dead_redis_is_said_at_start(env, procs):
    served = serve_gunicorn(procs, {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, upgrade=False)
    server, port = served.proc, served.port
    assert "REDIS_URL does not answer" in server.stderr
    ready = get(port, "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error: ConnectionError")


def test_every_stderr_line_is_one_json_object(env, procs):
    """gunicorn's own lines (master and workers) and the app's share one format."""
    server = serve_gunicorn(procs, env, upgrade=False).proc
    assert server.stop() == 0
    lines = [line for line in server.stderr.splitlines() if line.strip()]
    assert any("Booting worker with pid" in line for line in lines)
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(record), line


def test_every_stderr_line_is_one_json_object_with_redis_too(env, procs, redis_url):
    """With REDIS_URL the master checks Redis before forking; importing redis there once made each
    gevent worker print a plain-text MonkeyPatchWarning (d4ab2b0)."""
    port = free_port()
    server = procs([GUNICORN, "-c", "gunicorn.conf.py"], cwd=REPO,
                   env=base_env(**{**env, "PORT": str(port), "REDIS_URL": redis_url, "WEB_CONCURRENCY": "2"}),
                   name="gunicorn")
    wait_until_serving(server, port)
    assert server.stop() == 0
    lines = [line for line in server.stderr.splitlines() if line.strip()]
    assert sum("Booting worker with pid" in line for line in lines) >= 2
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(record), line


def test_host_keeps_the_server_on_loopback(env, procs):
    served = serve_gunicorn(procs, env, upgrade=False, HOST="127.0.0.1")
    server, port = served.proc, served.port
    assert f"Listening at: http://127.0.0.1:{port}" in server.stderr
