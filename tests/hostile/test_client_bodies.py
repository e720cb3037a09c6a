"""1. Client bodies through the Flask test client (property-based): random bytes, random JSON,
valid Messages bodies (must pass, byte for byte), the same bodies with one field given a wrong
type or a missing required field (a 400 naming that field, nothing forwarded), deep nesting,
huge strings, invalid UTF-8, NaN/Infinity, duplicate keys, BOMs, odd header values and
credentials; the same for `count_tokens`."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.hostile.checks import Problems, check_error, check_error_response, examples
from tests.hostile.harness import check_invalid, check_relay_answer
from tests.hostile.strategies import HOSTILE_JSON, JSON, KNOWN_FIELDS, broken_body, serialized, valid_body


@examples(80)
@given(case=serialized(valid_body()))
def test_valid_messages_bodies_are_forwarded_byte_for_byte(relay, case):
    body, raw = case
    answer = relay.post(raw)
    assert answer.status == 200, (answer.status, answer.data[:500], body)
    check_relay_answer(answer, raw, context="valid body")


@examples(40)
@given(case=serialized(valid_body(count_tokens=True)))
def test_valid_count_tokens_bodies_are_forwarded_byte_for_byte(relay, case):
    body, raw = case
    answer = relay.post(raw, path="/v1/messages/count_tokens")
    assert answer.status == 200, (answer.status, answer.data[:500], body)
    check_relay_answer(answer, raw, count_tokens=True, context="valid count_tokens body")


@examples(100)
@given(case=broken_body())
def test_a_wrong_type_or_missing_field_is_a_400_naming_it(relay, case):
    body, path = case
    check_invalid(relay.post(json.dumps(body).encode()), path, context=f"broken body {body!r}")


@examples(60)
@given(case=broken_body(count_tokens=True))
def test_count_tokens_wrong_type_or_missing_field_is_a_400_naming_it(relay, case):
    body, path = case
    check_invalid(relay.post(json.dumps(body).encode(), path="/v1/messages/count_tokens"), path,
                  context=f"broken count_tokens body {body!r}")


RANDOM_OBJECT = st.dictionaries(st.sampled_from(KNOWN_FIELDS) | st.text(max_size=8), HOSTILE_JSON, max_size=6)


@examples(80)
@given(body=RANDOM_OBJECT, route=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_random_objects_with_the_messages_fields(relay, body, route):
    raw = json.dumps(body).encode()
    check_relay_answer(relay.post(raw, path=route), raw, count_tokens=route.endswith("count_tokens"),
                       context="random object")


@examples(60)
@given(value=HOSTILE_JSON, route=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_random_json_values(relay, value, route):
    raw = json.dumps(value).encode()
    answer = relay.post(raw, path=route)
    check_relay_answer(answer, raw, count_tokens=route.endswith("count_tokens"), context="random JSON")
    if not isinstance(value, dict):
        check_invalid(answer, context="a JSON body that is not an object")


@examples(60)
@given(raw=st.binary(max_size=400), route=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_random_bytes(relay, raw, route):
    answer = relay.post(raw, path=route)
    check_relay_answer(answer, raw, count_tokens=route.endswith("count_tokens"), context="random bytes")


INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]


@st.composite
def defective_encoding(draw) -> tuple[bytes, str | None]:
    """A valid body's bytes with one encoding defect; the expected outcome ('400' or None: 200 or 4xx)."""
    body = draw(valid_body())
    body["x_marker"] = "MARKER"
    body["x_number"] = 4242424242
    raw = json.dumps(body).encode()
    kind = draw(st.sampled_from(["utf8", "constant", "surrogate", "bom", "utf16", "trailing", "control",
                                 "digits", "duplicate", "whitespace", "comment", "single_quotes"]))
    if kind == "utf8":
        return raw.replace(b"MARKER", b"MA" + draw(st.sampled_from(INVALID_UTF8)) + b"RKER"), "400"
    if kind == "constant":
        return raw.replace(b"4242424242", draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))), "400"
    if kind == "surrogate":
        lone = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\uDBFF", b"x\\ud83d", b"\\ude00y"]))
        return raw.replace(b"MARKER", lone), "400"
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw, None  # RFC 8259 lets a parser ignore it or refuse it
    if kind == "utf16":
        return raw.decode().encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"]))), "400"
    if kind == "trailing":
        return raw + draw(st.sampled_from([b"x", b"{}", b"]", b",", b"\x00", raw])), "400"
    if kind == "control":
        return raw.replace(b"MARKER", b"MA\x01\nRKER"), "400"
    if kind == "digits":
        return raw.replace(b"4242424242", b"9" * draw(st.integers(4301, 6000))), "400"
    if kind == "duplicate":
        dup = json.dumps({draw(st.sampled_from(KNOWN_FIELDS)): draw(JSON)})[1:-1].encode()
        return b"{" + dup + b"," + raw[1:], None
    if kind == "whitespace":
        return b" \r\n\t" + raw + b"\n\n ", None
    if kind == "comment":
        return raw.replace(b'"x_marker"', b'/* c */ "x_marker"'), "400"
    return raw.replace(b'"MARKER"', b"'MARKER'"), "400"


@examples(80)
@given(case=defective_encoding(), route=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_encoding_defects(relay, case, route):
    raw, expected = case
    answer = relay.post(raw, path=route)
    check_relay_answer(answer, raw, count_tokens=route.endswith("count_tokens"), context="encoding defect")
    if expected == "400":
        check_invalid(answer, context=f"encoding defect {raw[:120]!r}")


NESTING_PLACES = ["top", "unknown_field", "metadata", "tool_input", "input_schema", "message_content",
                  "system", "tool_result_chain"]


def nested_raw(place: str, depth: int, kind: str) -> bytes:
    """A body with `depth` levels of nesting at `place`, built as text (json.dumps would recurse)."""
    deep = ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)
    if place == "top":
        return deep.encode()
    if place == "tool_result_chain":  # known blocks inside known blocks: the validator itself recurses
        link = '{"type":"tool_result","tool_use_id":"t","content":['
        chain = link * depth + "]}" * depth
        return ('{"model":"claude-x","max_tokens":1,"messages":[{"role":"user","content":[' + chain
                + "]}]}").encode()
    body = {"model": "claude-x", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    if place == "unknown_field":
        body["x_deep"] = "DEEP"
    elif place == "metadata":
        body["metadata"] = {"deep": "DEEP"}
    elif place == "tool_input":
        body["messages"][0]["content"] = [{"type": "tool_use", "id": "t", "name": "n", "input": {"v": "DEEP"}}]
    elif place == "input_schema":
        body["tools"] = [{"name": "t", "input_schema": {"properties": "DEEP"}}]
    elif place == "message_content":
        body["messages"][0]["content"] = "DEEP"
    elif place == "system":
        body["system"] = "DEEP"
    return json.dumps(body).encode().replace(b'"DEEP"', deep.encode())


@examples(60)
@given(place=st.sampled_from(NESTING_PLACES), depth=st.integers(1, 3000), kind=st.sampled_from(["list", "dict"]))
def test_deep_nesting_is_a_success_or_a_400(relay, place, depth, kind):
    raw = nested_raw(place, depth, kind)
    answer = relay.post(raw)
    check_relay_answer(answer, raw, context=f"nesting {place} x{depth}")
    assert answer.status in (200, 400), answer.status


def test_nesting_10000_deep_is_a_400(relay):
    problems = Problems()
    for place in NESTING_PLACES:
        for route in ("/v1/messages", "/v1/messages/count_tokens"):
            for kind in ("list", "dict"):
                raw = nested_raw(place, 10_000, kind)
                problems.run(f"{route} {place} {kind}", check_invalid, relay.post(raw, path=route))
    problems.report()


def test_huge_strings_pass_and_bodies_over_the_limit_are_413(relay, app):
    big = {"model": "claude-x", "max_tokens": 1, "messages": [{"role": "user", "content": "x" * 5_000_000}],
           "x_unicode": "\u00e9\u4e2d\U0001f600" * 100_000}
    raw = json.dumps(big, ensure_ascii=False).encode()
    check_relay_answer(relay.post(raw), raw, context="5 MB of text")
    assert relay.upstream.requests[-1].body == raw

    limit = 64 * 1024
    app.config["MAX_CONTENT_LENGTH"] = limit
    try:
        body = {"model": "claude-x", "max_tokens": 1, "messages": [{"role": "user", "content": ""}]}
        filler = limit - len(json.dumps(body))
        at_limit = json.dumps({**body, "messages": [{"role": "user", "content": "y" * filler}]}).encode()
        assert len(at_limit) == limit
        over = json.dumps({**body, "messages": [{"role": "user", "content": "y" * (filler + 1)}]}).encode()
        for route in ("/v1/messages", "/v1/messages/count_tokens"):
            ct = route.endswith("count_tokens")
            for send in (relay.post, relay.post_without_length):
                ok = send(at_limit, path=route)
                check_relay_answer(ok, at_limit, count_tokens=ct, context=f"{send.__name__} at the limit")
                assert ok.status == 200
                refused = send(over, path=route)
                assert refused.status == 413, (send.__name__, refused.status, refused.data[:300])
                check_relay_answer(refused, over, count_tokens=ct, context=f"{send.__name__} over the limit")
                huge = send(b"[" + b"1," * (4 * limit) + b"1]", path=route)
                assert huge.status == 413, (send.__name__, huge.status)
                check_error(huge.status, huge.headers, huge.data)
    finally:
        app.config["MAX_CONTENT_LENGTH"] = app.config["OCTORELAY"].max_body_bytes


BAD_BODIES = [
    b"", b" ", b"\r\n", b"null", b"0", b"[]", b'"text"', b"true", b"{", b"}", b"{}x", b"{'a': 1}",
    b'{"model": NaN}', b'{"model": "a", "max_tokens": Infinity}', b'{"a": -Infinity}', b'{"a": nan}',
    b'{"model": "\\ud800", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "\xff", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "a\x00", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"max_tokens": 01, "model": "a", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"max_tokens": +1, "model": "a", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"max_tokens": 1.5, "model": "a", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"max_tokens": true, "model": "a", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"max_tokens": -1, "model": "a", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"max_tokens": 1' + b"0" * 5000 + b', "model": "a", "messages": [{"role": "user", "content": "hi"}]}',
    "{\"model\": \"a\"}".encode("utf-16"),
]
def test_hand_picked_bad_bodies_are_400(relay):
    problems = Problems()
    for raw in BAD_BODIES:
        for route in ("/v1/messages", "/v1/messages/count_tokens"):
            problems.run(f"{route} {raw[:60]!r}", check_invalid, relay.post(raw, path=route))
    problems.report()


def test_duplicate_keys_cannot_dodge_the_model_allow_list(relay):
    """The relay validates Python's reading of the body (the last duplicate wins) but forwards the
    client's bytes; an upstream that keeps the first duplicate would then serve a model the key
    may not use. A body with duplicate keys must not reach the upstream with a check that only
    held for one reading of it."""
    key = relay.admin.create_key(name="haiku-only", models=["claude-haiku-*"])["key"]
    rest = b'"max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]'
    for raw in (b'{"model": "claude-opus-4-1", "model": "claude-haiku-4-5", ' + rest + b"}",
                b'{"model": "claude-haiku-4-5", ' + rest + b', "model": "claude-opus-4-1"}'):
        before = len(relay.upstream.requests)
        resp = relay.client.post("/v1/messages", data=raw, headers={"x-api-key": key})
        assert resp.status_code in (400, 403), (raw, resp.status_code, resp.get_data()[:300])
        check_error_response(resp)
        assert relay.upstream.requests[before:] == [], f"{raw!r} reached the upstream"


def test_odd_model_names_still_leave_a_log_row(relay):
    """Whatever model string a client sends, a request that was routed is logged (and charged)."""
    problems = Problems()
    for model in ("claude-" + "x" * 300, "claude-\x00nul", "claude-\u00e9\u4e2d\U0001f600", "claude-sonnet-4-5"):
        raw = json.dumps({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}).encode()
        answer = relay.post(raw)
        problems.run(f"model {model[:30]!r}", check_relay_answer, answer, raw)
        rid = answer.headers["request-id"]
        logs = relay.admin.get("/admin/logs?limit=1000")
        assert logs.status_code == 200, logs.get_data()[:300]
        problems.check(rid in [row["request_id"] for row in logs.get_json()["data"]],
                       f"no log row for model {model[:30]!r}")
    problems.report()


# Header values as a compliant HTTP/1.1 server hands them on: no CR, LF, NUL or other controls
# (gunicorn refuses those), obs-text bytes 0x80-0xFF allowed, spaces and tabs stripped at both ends.
HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
                       | st.just("\t"), max_size=40).map(lambda v: v.strip(" \t"))


@examples(60)
@given(beta=HEADER_VALUE, version=st.none() | HEADER_VALUE, stream=st.booleans())
def test_forwarded_header_values_never_count_against_the_channel(relay, beta, version, stream):
    """anthropic-* headers are forwarded: whatever value a client puts there is the client's
    problem (a 200 or a 4xx), never a 5xx and never a failure charged to the shared channel."""
    body = {"model": "claude-x", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    raw = json.dumps(body).encode()
    headers = {"anthropic-beta": beta, **({"anthropic-version": version} if version is not None else {})}
    answer = relay.post(raw, headers=headers)
    check_relay_answer(answer, raw, context=f"headers {headers!r}")
    assert relay.channel_failures() == 0, f"headers {headers!r} counted as a channel failure"


def test_obs_text_in_anthropic_headers_is_not_an_upstream_failure(relay):
    """Bytes 0x80-0xFF pass HTTP servers; U+00A0 and U+0085 are whitespace to `requests`, which
    then refuses to send the header. That is the client's 400, not the channel's failure."""
    problems = Problems()
    raw = json.dumps({"model": "claude-x", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}).encode()
    for value in ("\xa0interleaved-thinking-2025-05-14", "\x85x", "2023-06-01\xa0"):
        for name in ("anthropic-beta", "anthropic-version"):
            for _ in range(3):  # three failures in a row put the channel into a cooldown
                problems.run(f"{name}: {value!r}", check_relay_answer, relay.post(raw, headers={name: value}), raw)
            problems.check(relay.channel_failures() == 0, f"{name}: {value!r} counted against the channel")
    problems.report()


AUTH_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                     max_size=80)


@examples(60)
@given(scheme=st.sampled_from(["x-api-key", "bearer", "both"]), value=AUTH_VALUE, prefix=st.booleans())
def test_random_credentials_are_401(relay, scheme, value, prefix):
    value = ("sk-octo-" + value) if prefix else value
    headers = {"x-api-key": value} if scheme in ("x-api-key", "both") else {}
    if scheme in ("bearer", "both"):
        headers["Authorization"] = "Bearer " + value
    raw = json.dumps({"model": "claude-x", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}).encode()
    before = len(relay.upstream.requests)
    resp = relay.client.post("/v1/messages", data=raw, headers=headers)
    assert resp.status_code == 401, (headers, resp.status_code)
    check_error_response(resp)
    assert len(relay.upstream.requests) == before
