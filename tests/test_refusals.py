"""Refused requests are visible: 400, 402, 403 and 429 answers given before routing leave a log row
(key, model, status, error type; no channel, no cost), bounded per key; unknown keys leave none."""
from app.models import RequestLog
from app.state import services
from tests.support.app import anthropic_channel, settled
from tests.support.bodies import messages_body
from tests.support.upstream import error_answer

BODY = messages_body(max_tokens=10)


def post(client, key, body=BODY):
    return client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})


def rows():
    return list(RequestLog.select().order_by(RequestLog.id))


def test_each_kind_of_refusal_leaves_one_row(client, admin, app):
    admin.create_channel()
    key = admin.create_key(name="k", models=["claude-sonnet-*"], rpm=3)
    spent = admin.create_key(name="spent", budget_usd=0)
    assert post(client, key, {**BODY, "max_tokens": "ten"}).status_code == 400
    assert post(client, key, {**BODY, "model": "claude-opus-4-8"}).status_code == 403
    assert post(client, spent).status_code == 402
    assert post(client, key).status_code == 200  # rpm 3: the 400 and 403 counted? only admitted ones do
    while post(client, key).status_code != 429:
        pass
    assert client.post("/v1/messages", json=BODY, headers={"x-api-key": "sk-octo-" + "z" * 43}).status_code == 401
    settled(app)
    got = [(r.key_id, r.model, r.status, r.error_type, r.channel_id, r.cost_nanos) for r in rows()]
    refused = [g for g in got if g[2] != 200]
    assert refused[:3] == [(key["id"], "claude-sonnet-4-6", 400, "invalid_request_error", None, 0),
                           (key["id"], "claude-opus-4-8", 403, "permission_error", None, 0),
                           (spent["id"], "-", 402, "billing_error", None, 0)]  # refused unread (issue 22)
    assert refused[-1][2:] == (429, "rate_limit_error", None, 0)
    assert all(g[0] is not None for g in got)  # the unknown key left nothing
    logs = admin.get("/admin/logs?limit=50").get_json()["data"]
    assert {row["status"] for row in logs} >= {400, 402, 403, 429}


def test_upstream_refusals_are_logged_once(client, admin, upstream, app):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="k")
    upstream.script(error_answer(400, "invalid_request_error", "upstream says no"))
    assert post(client, key).status_code == 400
    settled(app)
    [row] = rows()
    assert (row.status, row.channel_id is not None, row.attempts) == (400, True, 1)


def test_refusal_rows_are_bounded_per_key_and_all_counted(env, upstream):
    from app import create_app
    from app.db import db, upgrade
    from app.metrics import REFUSALS
    from tests.support.admin import AdminClient
    from tests.support.app import settled as flush

    app = create_app({**env, "OCTORELAY_REFUSAL_LOG_PER_MIN": "5"})
    upgrade(db.obj)
    try:
        client = app.test_client()
        admin = AdminClient(client)
        admin.create_channel()
        noisy, calm = admin.create_key(name="noisy"), admin.create_key(name="calm")
        before = REFUSALS.labels("400", "invalid_request_error", "no")._value.get()
        for _ in range(20):
            assert post(client, noisy, {"model": "claude-sonnet-4-6"}).status_code == 400
        assert post(client, calm, {"model": "claude-sonnet-4-6"}).status_code == 400
        flush(app)
        per_key = [r.key_id for r in rows()]
        assert per_key.count(noisy["id"]) == 5 and per_key.count(calm["id"]) == 1
        assert REFUSALS.labels("400", "invalid_request_error", "no")._value.get() == before + 15
    finally:
        services(app).close()
        db.obj.close_all()
