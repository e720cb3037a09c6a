"""Admin writes are in force for the next request on every worker: two gunicorn workers with warm
caches, each write followed at once by a request on a fresh connection (so either worker may
answer it), several times over; and writes made by the CLI, another process altogether."""
from __future__ import annotations

import pytest
import requests

from tests.support.net import url
from tests.support.processes import OCTORELAY, REPO, run, serve_gunicorn

pytestmark = pytest.mark.slow

ROUNDS = 4   # write-then-request pairs per kind of write; each request may land on either worker
WARM = 12    # requests per round before the write, so both workers hold the old state in cache


def ask(port: int, key: str, model: str) -> requests.Response:
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with requests.Session() as session:
        return session.post(url(port, "/v1/messages"), json=body, timeout=10,
                            headers={"x-api-key": key, "Connection": "close"})


def warm(port, key, model, status):
    for _ in range(WARM):
        resp = ask(port, key, model)
        assert resp.status_code == status, resp.text


@pytest.fixture
def served(env, procs, redis_url):
    served = serve_gunicorn(procs, {**env, "REDIS_URL": redis_url}, workers=2)
    return served.port, served.admin, served.env


def test_channel_create_and_disable_apply_to_the_next_request(served):
    port, admin, _ = served
    key = admin.create_key()["key"]
    for i in range(ROUNDS):
        model = f"fresh-{i}-a"
        warm(port, key, model, 404)
        channel = admin.create_channel(name=f"c{i}", models=[f"fresh-{i}-*"])
        assert ask(port, key, model).status_code == 200
        warm(port, key, model, 200)
        assert admin("PATCH", f"/admin/channels/{channel['id']}", json={"enabled": False}).status_code == 200
        resp = ask(port, key, model)
        assert resp.status_code == 404 and "no channel serves" in resp.json()["error"]["message"], resp.text


def test_price_budget_and_revocation_apply_to_the_next_request(served):
    port, admin, _ = served
    admin.create_channel(models=["claude-*", "unpriced-*"])
    for i in range(ROUNDS):
        # a new price: a budgeted key is refused an unpriced model, then served at once
        budgeted = admin.create_key(name=f"b{i}", budget_usd=100)
        model = f"unpriced-{i}"
        warm(port, budgeted["key"], model, 403)
        price = {"input": 1, "output": 1, "cache_write": 1, "cache_read": 1}
        assert admin("PUT", f"/admin/prices/{model}", json=price).status_code == 201
        assert ask(port, budgeted["key"], model).status_code == 200

        # a budget used up (0), raised, and lowered again
        assert admin("PATCH", f"/admin/keys/{budgeted['id']}", json={"budget_usd": 0}).status_code == 200
        assert ask(port, budgeted["key"], model).status_code == 402
        warm(port, budgeted["key"], model, 402)
        assert admin("PATCH", f"/admin/keys/{budgeted['id']}", json={"budget_usd": 50}).status_code == 200
        assert ask(port, budgeted["key"], model).status_code == 200

        # revocation
        warm(port, budgeted["key"], "claude-sonnet-4-5", 200)
        assert admin("DELETE", f"/admin/keys/{budgeted['id']}").status_code == 204
        resp = ask(port, budgeted["key"], "claude-sonnet-4-5")
        assert resp.status_code == 401 and "revoked" in resp.json()["error"]["message"], resp.text


def test_cli_writes_apply_to_the_next_request(served):
    """The CLI writes the database directly from its own process: the workers learn of it through
    the database (NOTIFY on PostgreSQL, the marker file beside SQLite)."""
    port, admin, server_env = served
    budgeted = admin.create_key(budget_usd=100)["key"]
    channel = admin.create_channel(models=["cli-*"])
    for i in range(ROUNDS):
        model = f"cli-{i}"
        warm(port, budgeted, model, 403)
        done = run([OCTORELAY, "prices", "set", model, "--input", "1", "--output", "1", "--cache-write", "1",
                    "--cache-read", "1"], cwd=REPO, env=server_env)
        assert done.returncode == 0, done.stderr
        assert ask(port, budgeted, model).status_code == 200
    done = run([OCTORELAY, "channels", "update", str(channel["id"]), "--disable"], cwd=REPO, env=server_env)
    assert done.returncode == 0, done.stderr
    assert ask(port, budgeted, "cli-0").status_code == 404


def test_a_write_through_one_instance_applies_to_the_next_request_on_another(env, procs, redis_url):
    """Two instances on one database and one Redis: each write goes through A's admin API and the
    very next request goes to B, so the request is certain to meet caches the write did not touch."""
    first = serve_gunicorn(procs, {**env, "REDIS_URL": redis_url}, workers=1, name="gunicorn-a")
    second = serve_gunicorn(procs, {**env, "REDIS_URL": redis_url}, workers=1, upgrade=False, name="gunicorn-b")
    a, b = first.admin, second.port
    key = a.create_key(name="k", budget_usd=100)
    for i in range(ROUNDS):
        model = f"two-{i}"
        warm(b, key["key"], model, 404)  # no channel yet
        channel = a.create_channel(name=f"two-{i}", models=[model])
        warm(b, key["key"], model, 403)  # a channel, but no price and the key has a budget
        price = {"input": 1, "output": 1, "cache_write": 1, "cache_read": 1}
        assert a("PUT", f"/admin/prices/{model}", json=price).status_code == 201
        warm(b, key["key"], model, 200)
        assert a("PATCH", f"/admin/channels/{channel['id']}", json={"enabled": False}).status_code == 200
        assert ask(b, key["key"], model).status_code == 404
    assert a("PATCH", f"/admin/keys/{key['id']}", json={"budget_usd": 0}).status_code == 200
    assert ask(b, key["key"], "two-0").status_code == 402
    assert a("DELETE", f"/admin/keys/{key['id']}").status_code == 204
    assert ask(b, key["key"], "two-0").status_code == 401
