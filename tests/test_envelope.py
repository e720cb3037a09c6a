"""Every response carries a request-id; every error, Flask's own included, is Anthropic-shaped."""
import json
import logging

import pytest

from app.logs import JsonFormatter
from tests.support.app import assert_error
from tests.support.constants import SECRET_KEY
from tests.support.net import free_port


def test_request_id_on_success_health_and_errors(client):
    for resp in (client.get("/healthz"), client.get("/readyz"), client.get("/nowhere")):
        rid = resp.headers["request-id"]
        assert rid.startswith("req_") and len(rid) == 28
    assert client.get("/healthz").headers["request-id"] != client.get("/healthz").headers["request-id"]


def test_unknown_path_is_404(client):
    assert_error(client.get("/v2/whatever"), 404, "not_found_error")
    assert_error(client.post("/v1/nope"), 404, "not_found_error")


def test_wrong_method_is_405_invalid_request(client):
    resp = client.delete("/healthz")
    assert_error(resp, 405, "invalid_request_error")
    assert "GET" in resp.headers["allow"]


def test_unexpected_exception_is_500_api_error(env, make_app):
    app = make_app(env)

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom secret-detail")

    body = assert_error(app.test_client().get("/boom"), 500, "api_error")
    assert "kaboom" not in body["error"]["message"]


def test_body_over_limit_is_413(env, admin, make_app):
    app = make_app({**env, "OCTORELAY_MAX_BODY_MB": "0.001"})
    client = app.test_client()
    resp = client.post("/admin/keys", data=b"{" + b" " * 5000 + b"}",
                       headers={"Authorization": admin.headers["Authorization"],
                                "content-type": "application/json"})
    assert_error(resp, 413, "request_too_large")


def test_database_down_is_503_overloaded_and_health_stays_up(make_app):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    app = make_app({"DATABASE_URL": dead, "OCTORELAY_SECRET_KEY": SECRET_KEY})
    client = app.test_client()
    assert_error(client.get("/v1/models", headers={"x-api-key": "sk-octo-" + "a" * 43}),
                 503, "overloaded_error")
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"].startswith("error")


@pytest.mark.parametrize("method, route, body", [
    ("get", "/v1/models", None),
    ("post", "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 5,
                              "messages": [{"role": "user", "content": "secret prompt text"}]}),
    ("post", "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 5, "stream": True,
                              "messages": [{"role": "user", "content": "secret prompt text"}]}),
])
def test_access_log_is_one_json_line_without_secrets(client, admin, method, route, body):
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(JsonFormatter().format(record))
    logger = logging.getLogger("octorelay")
    logger.addHandler(handler)
    try:
        admin.create_channel()
        raw = admin.create_key()["key"]
        resp = getattr(client, method)(route, json=body, headers={"x-api-key": raw})
        resp.get_data()
        resp.close()  # the line is written when the response is closed (streams: at their end)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(r) for r in records]
    mine = [line for line in lines if line.get("request_id") == resp.headers["request-id"]
            and line["logger"] == "octorelay.access"]
    assert len(mine) == 1
    line = mine[0]
    assert line["route"] == route and line["status"] == 200 and line["key_id"] is not None
    assert isinstance(line["latency_ms"], float) and line["method"] == method.upper()
    assert all(raw not in r and "secret prompt" not in r and "mock channel" not in r for r in records)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_routes_ignore_auth(client, path):
    assert client.get(path).status_code == 200


def test_readyz_names_a_database_that_cannot_be_reached(make_app):
    port = free_port()
    app = make_app({"DATABASE_URL": f"postgresql://postgres:hunter2@127.0.0.1:{port}/nothing",
                      "OCTORELAY_SECRET_KEY": SECRET_KEY})
    ready = app.test_client().get("/readyz")
    database = ready.get_json()["checks"]["database"]
    assert ready.status_code == 503 and database.startswith("error: OperationalError: ")
    assert str(port) in database and "hunter2" not in database  # where it tried, never the password


def test_readyz_is_not_ready_until_the_schema_is_current(tmp_path, make_app):
    from app.db import db, upgrade

    app = make_app({"DATABASE_URL": f"sqlite:///{tmp_path}/fresh.db", "OCTORELAY_SECRET_KEY": SECRET_KEY})
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"] == "ok"
    schema = ready.get_json()["checks"]["schema"]
    assert "0001_initial" in schema and "octorelay db upgrade" in schema
    upgrade(db.obj)
    assert client.get("/readyz").get_json() == {"status": "ready", "checks": {"database": "ok", "schema": "ok"}}
    db.obj.close_all()
