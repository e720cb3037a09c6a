"""1b. Admin API bodies from a leaked admin token: hostile bodies and ids for keys, channels and
prices are a 400 (or 404) that creates or changes nothing, and no stored value breaks a listing."""
from __future__ import annotations

import json
import urllib.parse
from datetime import timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from app.db import db
from app.models import ApiKey, Channel, ModelPrice
from tests.hostile.checks import Problems, check_error_response, examples
from tests.hostile.strategies import HOSTILE_JSON, HOSTILE_TEXT, JSON, TEXT
from tests.support.constants import SECRETS_USED

DATETIMES = st.builds(
    lambda moment, offset: (moment if offset is None
                            else moment.replace(tzinfo=timezone(timedelta(minutes=offset)))).isoformat(),
    st.datetimes(), st.none() | st.integers(-(24 * 60 - 1), 24 * 60 - 1))
GLOB = st.text(min_size=1, max_size=20) | HOSTILE_TEXT
KEY_FIELDS = {
    "name": st.text(min_size=1, max_size=30) | HOSTILE_TEXT,
    "budget_usd": st.none() | st.floats(0, 1e9) | st.integers(0, 10 ** 9),
    "token_quota": st.none() | st.integers(0, 10 ** 15),
    "rpm": st.none() | st.integers(1, 10 ** 9),
    "tpm": st.none() | st.integers(1, 10 ** 9),
    "max_concurrency": st.none() | st.integers(1, 10 ** 9),
    "models": st.none() | st.lists(GLOB, max_size=3),
    "expires_at": st.none() | DATETIMES,
    "enabled": st.booleans(),
}
CHANNEL_FIELDS = {
    "name": st.text(min_size=1, max_size=30) | HOSTILE_TEXT,
    "type": st.sampled_from(["anthropic", "openai", "mock"]) | TEXT,
    "base_url": st.none() | st.sampled_from(["http://127.0.0.1:9", "https://api.example.com/v1",
                                             "http://localhost", "https://h\u00e9.example"]) | HOSTILE_TEXT,
    "api_key": st.none() | HOSTILE_TEXT,
    "models": st.lists(GLOB, min_size=1, max_size=3),
    "model_map": st.dictionaries(GLOB, GLOB, max_size=2),
    "priority": st.integers(-10 ** 6, 10 ** 6),
    "weight": st.integers(1, 10 ** 6),
    "timeout_s": st.floats(0.1, 86400),
    "enabled": st.booleans(),
}
PRICE_FIELDS = {name: st.floats(0, 1e6) | st.integers(0, 10 ** 6) for name in ("input", "output", "cache_write",
                                                                                 "cache_read")}


@st.composite
def admin_body(draw, fields: dict, required: tuple = ()):
    """Some of the schema's fields, each valid or a random JSON value; now and then an unknown one."""
    out = {}
    for name, valid in fields.items():
        present = draw(st.integers(0, 9)) > 0 if name in required else draw(st.booleans())
        if present:
            out[name] = draw(st.one_of(valid, valid, HOSTILE_JSON))
    if draw(st.integers(0, 5)) == 0:
        out[draw(HOSTILE_TEXT)] = draw(JSON)  # an unknown field, its name echoed in the 400
    return out


def admin_payload(fields, required=()):
    """JSON text of an admin body, or of a random JSON value, or random bytes."""
    return st.one_of(admin_body(fields, required).map(lambda b: json.dumps(b).encode()),
                     admin_body(fields, required).map(lambda b: json.dumps(b).encode()),
                     admin_body(fields, required).map(lambda b: json.dumps(b).encode()),
                     HOSTILE_JSON.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=200))


def listing(admin, what: str) -> list:
    resp = admin.call("get", f"/admin/{what}")
    assert resp.status_code == 200, f"GET /admin/{what} is broken: {resp.status_code} {resp.get_data()[:300]!r}"
    return resp.get_json()["data"]


def admin_send(admin, method: str, path: str, raw: bytes):
    resp = admin.call(method, path, data=raw, headers={"content-type": "application/json"})
    if resp.status_code == 201 and isinstance(resp.get_json(), dict) and "key" in resp.get_json():
        SECRETS_USED.add(resp.get_json()["key"])  # the session's log audit looks for it too
    return resp


@examples(70)
@given(raw=admin_payload(KEY_FIELDS, ("name",)))
def test_admin_create_key_with_hostile_bodies(admin_api, raw):
    admin = admin_api
    fresh_targets(admin)
    before = listing(admin, "keys")
    resp = admin_send(admin, "post", "/admin/keys", raw)
    after = listing(admin, "keys")
    if resp.status_code == 201:
        created = resp.get_json()
        assert created["key"].startswith("sk-octo-") and len(after) == len(before) + 1
        assert created["name"] == json.loads(raw)["name"]  # stored as sent
        return
    assert resp.status_code == 400, (raw[:300], resp.status_code, resp.get_data()[:300])
    check_error_response(resp, context=repr(raw[:200]))
    assert after == before, f"a 400 changed the keys: {raw[:200]!r}"


@examples(70)
@given(raw=admin_payload(CHANNEL_FIELDS, ("name", "type", "models")))
def test_admin_create_channel_with_hostile_bodies(admin_api, raw):
    admin = admin_api
    fresh_targets(admin)
    before = listing(admin, "channels")
    resp = admin_send(admin, "post", "/admin/channels", raw)
    after = listing(admin, "channels")
    if resp.status_code == 201:
        created, sent = resp.get_json(), json.loads(raw)
        assert len(after) == len(before) + 1
        assert (created["name"], created["models"]) == (sent["name"], sent["models"])  # stored as sent
        return
    assert resp.status_code == 400, (raw[:300], resp.status_code, resp.get_data()[:300])
    check_error_response(resp, context=repr(raw[:200]))
    assert after == before, f"a 400 changed the channels: {raw[:200]!r}"


ID = st.one_of(st.just("existing"), st.integers(-5, 50), st.integers(2 ** 31 - 2, 2 ** 31 + 2),
               st.integers(2 ** 63 - 2, 2 ** 63 + 2), st.integers(0, 2 ** 80))


def fresh_targets(admin) -> dict:
    """No keys or channels but one of each to aim at: every example and case starts from the same
    database, so a bad value one of them managed to store cannot fail the next one."""
    with db.connection_context():
        ApiKey.delete().execute()
        Channel.delete().execute()
    return {"keys": admin.create_key(name="target")["id"],
            "channels": admin.create_channel(name="target", type="mock", models=["claude-*"])["id"]}


@examples(60)
@given(what=st.sampled_from(["keys", "channels"]), target=ID, data=st.data())
def test_admin_patch_with_hostile_bodies_and_ids(admin_api, what, target, data):
    admin = admin_api
    existing = fresh_targets(admin)
    raw = data.draw(admin_payload(KEY_FIELDS if what == "keys" else CHANNEL_FIELDS))
    ident = existing[what] if target == "existing" else target
    before = listing(admin, what)
    resp = admin_send(admin, "patch", f"/admin/{what}/{ident}", raw)
    after = listing(admin, what)
    if resp.status_code == 200:
        assert ident == existing[what]
        return
    assert resp.status_code in (400, 404), (what, ident, raw[:300], resp.status_code, resp.get_data()[:300])
    check_error_response(resp, context=f"PATCH {what}/{ident} {raw[:200]!r}")
    assert after == before, f"a {resp.status_code} changed the {what}: {raw[:200]!r}"


PRICE_MODEL = st.one_of(st.text(st.characters(exclude_characters="/"), min_size=1, max_size=40),
                        st.integers(150, 260).map(lambda n: "m" * n),
                        st.sampled_from(["claude-\x00x", "..", ".", "%", "?x=1", "#x", "a b", "\u00e9\u4e2d"]))


@examples(60)
@given(model=PRICE_MODEL, raw=admin_payload(PRICE_FIELDS, tuple(PRICE_FIELDS)))
def test_admin_put_price_with_hostile_models_and_bodies(admin_api, model, raw):
    admin = admin_api
    with db.connection_context():
        ModelPrice.delete().execute()  # the same start for every example
    before = listing(admin, "prices")
    resp = admin_send(admin, "put", "/admin/prices/" + urllib.parse.quote(model, safe=""), raw)
    after = listing(admin, "prices")
    if resp.status_code in (200, 201):
        assert resp.get_json()["model"] == model  # stored as sent
        assert model in [p["model"] for p in after]
        return
    assert resp.status_code in (400, 404, 405), (model, raw[:300], resp.status_code, resp.get_data()[:300])
    check_error_response(resp, context=f"PUT prices/{model!r} {raw[:200]!r}")
    assert after == before, f"a {resp.status_code} changed the prices: {model!r} {raw[:200]!r}"


ADMIN_ROUTES = [("post", "/admin/keys"), ("post", "/admin/channels"), ("patch", "/admin/keys/{key}"),
                ("patch", "/admin/channels/{channel}"), ("put", "/admin/prices/claude-x")]
HOSTILE_ADMIN_BODIES = {
    "deep list": b'{"name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "deep object": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "deep array": b"[" * 100_000 + b"]" * 100_000,
    "NaN": b'{"name": "x", "budget_usd": NaN, "input": NaN}',
    "invalid utf-8": b'{"name": "\xff\xfe"}',
    "many digits": b'{"name": "x", "rpm": 1' + b"0" * 5000 + b"}",
    "lone surrogate in name": b'{"name": "a\\ud800", "type": "mock", "models": ["claude-*"]}',
    "lone surrogate in models": b'{"name": "s", "type": "mock", "models": ["\\udfff"]}',
    "lone surrogate in model_map": b'{"name": "s", "type": "mock", "models": ["a"], "model_map": {"a": "\\ud800"}}',
    "lone surrogate in api_key": b'{"name": "s", "type": "mock", "models": ["a"], "api_key": "\\ud800"}',
    "lone surrogate in a price": b'{"input": 1, "output": 1, "cache_write": 1, "cache_read": 1, "x": "\\ud800"}',
    "lone surrogate in an unknown field's name": b'{"name": "x", "\\ud800": 1}',
}


def test_admin_hostile_bodies_are_400_and_change_nothing(admin_api):
    admin, problems = admin_api, Problems()
    for label, raw in HOSTILE_ADMIN_BODIES.items():
        for method, template in ADMIN_ROUTES:
            existing = fresh_targets(admin)
            path = template.format(key=existing["keys"], channel=existing["channels"])
            where = f"{label}: {method.upper()} {path}"
            before = {what: problems.run(f"{where} (before)", listing, admin, what)
                      for what in ("keys", "channels", "prices")}
            resp = admin_send(admin, method, path, raw)
            if problems.check(resp.status_code == 400, f"{where}: {resp.status_code} {resp.get_data()[:160]!r}"):
                problems.run(where, check_error_response, resp)
            after = {what: problems.run(f"{where} (after)", listing, admin, what)
                     for what in ("keys", "channels", "prices")}
            problems.check(after == before, f"{where}: changed something")
    problems.report()


ODD_ADMIN_VALUES = [
    ("post", "/admin/keys", {"name": "nul\x00name"}),
    ("post", "/admin/keys", {"name": "k", "models": ["claude-\x00"]}),
    ("post", "/admin/channels", {"name": "nul\x00name", "type": "mock", "models": ["claude-*"]}),
    ("post", "/admin/channels", {"name": "c", "type": "mock", "models": ["claude-*"], "api_key": "sk-\x00"}),
    ("put", "/admin/prices/claude-%00x", {"input": 1, "output": 1, "cache_write": 1, "cache_read": 1}),
    ("put", "/admin/prices/" + "m" * 201, {"input": 1, "output": 1, "cache_write": 1, "cache_read": 1}),
    ("put", "/admin/prices/" + "m" * 5000, {"input": 1, "output": 1, "cache_write": 1, "cache_read": 1}),
    ("post", "/admin/keys", {"name": "k", "expires_at": "0001-01-01T00:00:00+01:00"}),
    ("post", "/admin/keys", {"name": "k", "expires_at": "9999-12-31T23:59:59-01:00"}),
    ("post", "/admin/keys", {"name": "k", "expires_at": "0001-01-01T00:00:00+23:59"}),
    ("patch", "/admin/keys/{key}", {"expires_at": "9999-12-31T23:30:00-12:00"}),
    ("patch", "/admin/keys/99999999999999999999", {"name": "k"}),
    ("patch", "/admin/channels/99999999999999999999", {"name": "k"}),
    ("get", "/admin/keys/9223372036854775808", None),
    ("get", "/admin/channels/99999999999999999999", None),
    ("delete", "/admin/keys/18446744073709551616", None),
    ("delete", "/admin/channels/18446744073709551616", None),
]
def check_odd_admin_value(admin, method: str, path: str, body) -> None:
    resp = admin.call(method, path, **({} if body is None else {"json": body}))
    assert resp.status_code < 500, (resp.status_code, resp.get_data()[:200])
    if resp.status_code >= 400:
        assert resp.status_code in (400, 404), resp.status_code
        check_error_response(resp)
        return
    if body and "name" in body:
        assert resp.get_json()["name"] == body["name"], "stored altered"
    if path.startswith("/admin/prices/"):
        assert resp.get_json()["model"] == urllib.parse.unquote(path.rsplit("/", 1)[1]), "stored altered"
    for what in ("keys", "channels", "prices"):
        listing(admin, what)


def test_admin_values_the_database_may_not_hold(admin_api):
    """What a column cannot hold (NUL in PostgreSQL text, more than its length, a datetime out of
    range, an id beyond BIGINT) is a 4xx -- or stored exactly as sent -- but never a 500."""
    problems = Problems()
    for method, path, body in ODD_ADMIN_VALUES:
        existing = fresh_targets(admin_api)
        path = path.format(key=existing["keys"], channel=existing["channels"])
        problems.run(f"{method.upper()} {path[:60]} {body!r:.80}", check_odd_admin_value, admin_api, method, path, body)
    problems.report()
