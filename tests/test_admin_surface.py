"""The admin surface: a long admin token or no start, failed attempts throttled per client address
(and logged without the token), /metrics behind OCTORELAY_METRICS_TOKEN when it is set."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.config import ConfigError, load_settings
from app.db import db, upgrade
from app.state import services
from tests.support.app import assert_error
from tests.support.constants import ADMIN_TOKEN, SECRETS_USED
from tests.support.logs import captured_logs
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parent.parent
WRONG = "wrong-admin-token-not-this-one-8c1d5e7f"  # a guess: it must never reach the log
METRICS_TOKEN = "metrics-scrape-token-4b9a2e"
SECRETS_USED.update({WRONG, METRICS_TOKEN})


# the token's length ---------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["x", "change-me", "a" * 31, " " + "b" * 31 + " "])
def test_an_admin_token_under_32_characters_refuses_to_start(token):
    with pytest.raises(ConfigError) as refused:
        load_settings({"OCTORELAY_ADMIN_TOKEN": token})
    message = str(refused.value)
    assert message.startswith(f"OCTORELAY_ADMIN_TOKEN is {len(token.strip())} characters: it must be at least 32")
    assert "\n" not in message and "secrets.token_urlsafe(32)" in message
    assert token.strip() not in message


def test_32_characters_or_none_are_accepted():
    assert load_settings({"OCTORELAY_ADMIN_TOKEN": "c" * 32}).admin_token == "c" * 32
    assert load_settings({"OCTORELAY_ADMIN_TOKEN": ""}).admin_token is None  # unset: admin API off (403)
    assert len(ADMIN_TOKEN) >= 32


def test_the_web_process_does_not_start_with_a_short_token(env, tmp_path):
    """As the Procfile starts it: gunicorn exits 2 with one line before any worker forks."""
    run_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WEB_CONCURRENCY")}
    run_env.update(env, OCTORELAY_ADMIN_TOKEN="short-token", PORT=str(free_port()),
                   GUNICORN_CMD_ARGS="--no-control-socket")
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=run_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["octorelay: error: OCTORELAY_ADMIN_TOKEN is 11 characters: it must be at least 32 "
                     "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"]
    assert "short-token" not in done.stderr + done.stdout


# throttling failed attempts -------------------------------------------------------------------

def from_address(address: str, token: str | None = ADMIN_TOKEN, **headers) -> dict:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return {"headers": headers, "environ_base": {"REMOTE_ADDR": address}}


@pytest.fixture
def admin_log():
    """The octorelay.admin logger's records (octorelay's loggers do not propagate to pytest's)."""
    with captured_logs("octorelay.admin", logging.WARNING) as records:
        yield records


def test_failed_attempts_are_throttled_per_address_and_logged_without_the_token(client, admin_log):
    for _ in range(10):
        assert_error(client.get("/admin/keys", **from_address("203.0.113.7", WRONG)), 401, "authentication_error")
    assert_error(client.get("/admin/keys", **from_address("203.0.113.7", None)), 429, "rate_limit_error",
                 contains="too many failed admin sign-ins from this address")
    throttled = client.get("/admin/keys", **from_address("203.0.113.7"))  # even the right token waits
    assert_error(throttled, 429, "rate_limit_error")
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    for _ in range(20):
        assert client.get("/admin/keys", **from_address("203.0.113.7", WRONG)).status_code == 429
    # another address is not affected, with the right token or a wrong one
    assert client.get("/admin/keys", **from_address("198.51.100.2")).status_code == 200
    assert_error(client.get("/admin/keys", **from_address("198.51.100.2", WRONG)), 401, "authentication_error")

    failed = [r for r in admin_log if r.getMessage() == "admin sign-in failed"]
    assert [r.fields["client"] for r in failed] == ["203.0.113.7"] * 10 + ["198.51.100.2"]
    assert {r.fields["reason"] for r in failed} == {"wrong token"} and failed[0].fields["path"] == "/admin/keys"
    noted = [r for r in admin_log if r.getMessage() == "admin sign-ins throttled"]
    assert len(noted) == 1 and noted[0].fields["client"] == "203.0.113.7"  # once, not per attempt
    assert all(WRONG not in r.getMessage() and WRONG not in str(getattr(r, "fields", "")) for r in admin_log)


def test_the_address_behind_a_trusted_proxy_is_the_one_it_forwards(app, client):
    # 127.0.0.1 is trusted by default (FORWARDED_ALLOW_IPS): its last X-Forwarded-For entry is the client
    for _ in range(10):
        client.get("/admin/keys", **from_address("127.0.0.1", WRONG, **{"X-Forwarded-For": "1.2.3.4, 203.0.113.9"}))
    blocked = client.get("/admin/keys", **from_address("127.0.0.1", **{"X-Forwarded-For": "203.0.113.9"}))
    assert_error(blocked, 429, "rate_limit_error")
    # a client cannot dodge by writing its own entries first: the proxy's (last) one counts
    assert client.get("/admin/keys", **from_address("127.0.0.1", **{"X-Forwarded-For": "9.9.9.9, 203.0.113.9"})
                      ).status_code == 429
    assert client.get("/admin/keys", **from_address("127.0.0.1", **{"X-Forwarded-For": "203.0.113.10"})
                      ).status_code == 200
    # from an untrusted peer, X-Forwarded-For is the client's own say: ignored
    guard = services(app).admin_guard
    assert guard.client_address("192.0.2.5", "203.0.113.9") == "192.0.2.5"
    assert guard.client_address("127.0.0.1", "not-an-address") == "127.0.0.1"


def test_every_instance_shares_the_count_through_redis(env, redis_url):
    """Two apps (instances) on one Redis: failures at one throttle the address at the other."""
    apps = [create_app({**env, "REDIS_URL": redis_url}) for _ in range(2)]
    upgrade(db.obj)
    clients = [a.test_client() for a in apps]
    for n in range(10):
        assert clients[n % 2].get("/admin/prices", **from_address("203.0.113.20", WRONG)).status_code == 401
    assert_error(clients[0].get("/admin/prices", **from_address("203.0.113.20")), 429, "rate_limit_error")
    assert_error(clients[1].get("/admin/prices", **from_address("203.0.113.20")), 429, "rate_limit_error")
    assert clients[1].get("/admin/prices", **from_address("203.0.113.21")).status_code == 200
    for a in apps:
        services(a).close()


def test_a_down_limit_store_leaves_the_admin_api_usable_and_still_throttled(env):
    app = create_app({**env, "REDIS_URL": "redis://127.0.0.1:9/0"})  # nothing listens on port 9
    upgrade(db.obj)
    client = app.test_client()
    assert client.get("/admin/prices", **from_address("203.0.113.30")).status_code == 200
    for _ in range(10):
        assert client.get("/admin/prices", **from_address("203.0.113.30", WRONG)).status_code == 401
    assert client.get("/admin/prices", **from_address("203.0.113.30")).status_code == 429
    services(app).close()


# /metrics ---------------------------------------------------------------------------------------

def test_metrics_are_public_without_a_metrics_token(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200 and b"octorelay_requests_total" in resp.data


def test_metrics_need_the_metrics_token_when_it_is_set(env):
    app = create_app({**env, "OCTORELAY_METRICS_TOKEN": METRICS_TOKEN})
    upgrade(db.obj)
    client = app.test_client()
    assert_error(client.get("/metrics"), 401, "authentication_error", contains="OCTORELAY_METRICS_TOKEN")
    assert_error(client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}), 401,
                 "authentication_error")
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status_code == 200 and b"octorelay_cost_usd_total" in resp.data
    assert b"octorelay_admin_auth_failures_total" in resp.data
    assert client.get("/healthz").status_code == 200  # the probes stay open
    services(app).close()
