"""3. The database away for a moment (a proxy in front of it stops, stalls or cuts): 503s within
seconds, recovery without a restart, settlements that keep their row, a gunicorn worker that lives."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from app import create_app
from app.db import db, upgrade
from app.models import ApiKey, RequestLog
from app.state import services
from tests.faults.helpers import (STREAM_BODY, TcpProxy, fresh_get, fresh_post, is_error, one_row, pg_target,
                                  post, proxied_url, sonnet_cost, start_gunicorn)
from tests.support.admin import AdminClient
from tests.support.app import anthropic_channel, assert_error
from tests.support.constants import PG_URL, UPSTREAM_KEY
from tests.support.net import url
from tests.support.processes import migrate, worker_pids
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer
from tests.support.waiting import wait_until

needs_pg = pytest.mark.skipif(not PG_URL, reason="a database outage is only meaningful on PostgreSQL: "
                                                 "set OCTORELAY_TEST_DATABASE_URL")


@pytest.fixture
def db_proxy():
    proxy = TcpProxy(pg_target(PG_URL))
    yield proxy
    proxy.close()


@pytest.fixture
def proxied(env, db_proxy, upstream):
    """An in-process app whose database connections all go through `db_proxy`."""
    app = create_app({**env, "DATABASE_URL": proxied_url(env["DATABASE_URL"], db_proxy.port)})
    upgrade(db.obj)
    client = app.test_client()
    from tests.support.admin import AdminClient

    admin = AdminClient(client)
    anthropic_channel(admin, upstream)
    yield app, client, admin, admin.create_key(name="outage")
    services(app).close()
    db.obj.close_all()


CACHE_TTL = 1.0  # OCTORELAY_KEY_CACHE_TTL default: key and channel lookups may be this old


@needs_pg
def test_database_outage_gives_503_and_recovers_in_process(proxied, db_proxy, upstream):
    app, client, admin, key = proxied
    assert post(client, key).status_code == 200

    db_proxy.fail()
    time.sleep(CACHE_TTL + 0.2)  # past the per-process key and channel caches
    for _ in range(3):
        started = time.monotonic()
        assert_error(post(client, key), 503, "overloaded_error")
        assert_error(admin.get("/admin/keys"), 503, "overloaded_error")
        assert_error(admin.post("/admin/keys", json={"name": "during"}), 503, "overloaded_error")
        assert time.monotonic() - started < 5
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"].startswith("error")
    assert db_proxy.refused > 0  # the app did try, and was turned away
    assert len(upstream.requests) == 1  # nothing was relayed while the key could not be checked

    db_proxy.restore()
    statuses = [post(client, key).status_code for _ in range(5)]
    assert statuses == [200] * 5, statuses
    assert admin.get("/admin/keys").status_code == 200
    assert client.get("/readyz").status_code == 200


HANG_LIMIT = 8.0  # "no hang beyond a few seconds" (with some room for a loaded machine)


@needs_pg
def test_unresponsive_database_gives_503_within_seconds(proxied, db_proxy):
    """A database host that takes the connection but never answers (a stuck server, a dead host
    behind a load balancer): requests must still end with 503 overloaded_error in seconds."""
    app, client, admin, key = proxied
    assert post(client, key).status_code == 200
    db_proxy.hang()
    time.sleep(CACHE_TTL + 0.2)  # past the key and channel caches: the key must be looked up
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(post(client, key)), daemon=True)
    thread.start()
    try:
        thread.join(HANG_LIMIT)
        assert not thread.is_alive(), f"still waiting for the database after {HANG_LIMIT} s"
        assert_error(answers[0], 503, "overloaded_error")
    finally:
        db_proxy.fail()  # let a stuck request go before teardown
        thread.join(5)


SETTLEMENT_CASES = {
    "stream": "a stream that started before the outage ends during it",
    "non-stream": "admitted from the warm key and channel caches just after the database went",
    "stream-price-reload": "as `stream`, and the price cache must be reloaded at settlement",
}


@needs_pg
@pytest.mark.parametrize("case", list(SETTLEMENT_CASES))
def test_settlement_during_an_outage_keeps_its_row(proxied, db_proxy, upstream, case):
    """docs/api.md, Accounting: every routed request writes one log row and charges the key, however it ends.
    Here a request was admitted and served, and its settlement falls in the outage: the client
    still gets a clean answer, its concurrency slot is given back, and once the database is back
    (and the next request settles) its row and charge are there -- exactly once."""
    app, client, admin, key = proxied
    admin.patch(f"/admin/keys/{key['id']}", json={"max_concurrency": 1})
    assert post(client, key).status_code == 200  # warms the key, channel and price caches (25 + 15)
    if case == "stream-price-reload":
        relay = services(app).relay
        getattr(relay, "ledger", relay).prices.ttl = 0  # as if the 5 s price cache ran out meanwhile
    usage = {"input_tokens": 50, "output_tokens": 1}
    if case == "non-stream":
        upstream.script(json_answer(anthropic_message(usage={"input_tokens": 50, "output_tokens": 20})))
        db_proxy.fail()
        resp = post(client, key)
        assert resp.status_code == 200 and resp.get_json()["usage"]["output_tokens"] == 20
    else:
        upstream.script(sse_answer(anthropic_stream_events(["a"] * 6, usage_start=usage,
                                                           usage_delta={"output_tokens": 20}), delay=0.1))
        resp = post(client, key, STREAM_BODY)  # returns once the first event is in
        db_proxy.fail()  # the rest of the stream, and its settlement, fall in the outage
        data = resp.get_data()  # raises if the settlement's failure escapes into the stream
        assert data.rstrip().endswith(b'data: {"type": "message_stop"}'), data[-200:]
    time.sleep(0.3)
    db_proxy.restore()

    # the next request: admitted (the slot came back), and its settlement finds the database again
    assert post(client, key).status_code == 200  # 25 + 15
    assert services(app).relay.flush(10)  # this client does not wait for settlements
    request_id = resp.headers["request-id"]
    row = one_row(request_id, timeout=3)
    assert (row.input_tokens, row.output_tokens, row.status) == (50, 20, 200)
    assert row.cost_nanos == sonnet_cost(50, 20)
    shown = ApiKey.get_by_id(key["id"])
    assert shown.used_tokens == 40 + 70 + 40
    assert shown.used_nanos == sum(r.cost_nanos for r in RequestLog.select())
    assert RequestLog.select().count() == 3


@pytest.mark.slow
@needs_pg
def test_database_outage_under_gunicorn_keeps_the_worker(env, procs, db_proxy, upstream):
    """503s while the database is away, the same worker before and after, and a stream that
    settled during the outage has its row and charge once the database is back."""
    migrate(env)
    gunicorn_env = {**env, "DATABASE_URL": proxied_url(env["DATABASE_URL"], db_proxy.port)}
    server, port = start_gunicorn(procs, gunicorn_env, workers=1)
    admin = AdminClient(port)
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    key = admin.create_key(name="outage")
    # several requests at once, so the worker's pool holds several connections when the DB goes
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(lambda _: fresh_post(port, key["key"]).status_code, range(12))) == [200] * 12
    workers = worker_pids(server.popen.pid)
    assert len(workers) == 1

    # a stream that starts now and ends (settles) in the middle of the outage
    upstream.script(sse_answer(anthropic_stream_events(["a"] * 6, usage_start={"input_tokens": 50,
                               "output_tokens": 1}, usage_delta={"output_tokens": 20}), delay=0.15))
    streamed: list = []

    def read_stream():
        with requests.post(url(port, "/v1/messages"), json=STREAM_BODY, stream=True, timeout=15,
                           headers={"x-api-key": key["key"], "Connection": "close"}) as resp:
            streamed.append((resp.headers.get("request-id"), resp.content))

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert upstream.wait_for_requests(13, 5)

    db_proxy.fail()
    time.sleep(CACHE_TTL + 0.2)
    for _ in range(3):
        started = time.monotonic()
        assert is_error(fresh_post(port, key["key"]), 503, "overloaded_error")
        assert is_error(admin("GET", "/admin/keys"), 503, "overloaded_error")
        assert time.monotonic() - started < 5
    assert fresh_get(port, "/healthz").status_code == 200
    ready = fresh_get(port, "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
    reader.join(10)
    assert streamed and streamed[0][1].rstrip().endswith(b'{"type": "message_stop"}'), streamed

    db_proxy.restore()
    statuses = [fresh_post(port, key["key"]).status_code for _ in range(10)]
    assert statuses == [200] * 10, statuses
    assert admin("GET", "/admin/keys").status_code == 200
    assert fresh_get(port, "/readyz").status_code == 200
    assert worker_pids(server.popen.pid) == workers  # the same worker served throughout
    assert server.popen.poll() is None

    def logs_now():
        return admin("GET", f"/admin/logs?key_id={key['id']}&limit=100").json()["data"]

    wait_until(lambda: len(logs_now()) >= 23, timeout=5)  # rows are written just after each answer
    logs = logs_now()
    assert len(logs) == 12 + 1 + 10  # the 503s never reached routing: no rows, no charge
    stream_rows = [row for row in logs if row["request_id"] == streamed[0][0]]
    assert len(stream_rows) == 1, "the stream settled during the outage has no log row"
    assert (stream_rows[0]["input_tokens"], stream_rows[0]["output_tokens"]) == (50, 20)
    shown = admin("GET", f"/admin/keys/{key['id']}").json()
    assert shown["used_tokens"] == 22 * 40 + 70
    assert server.stop() == 0, server.stderr
