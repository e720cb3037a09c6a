"""Hostile input (issue 7, item 1): whatever a client or a leaked admin token sends, octorelay
answers with a valid success or a well-formed Anthropic error -- never a 500, never a hang --
and nothing that failed validation reaches an upstream or the database.

1. Bodies, through the Flask test client (property-based, `hypothesis`): random bytes, random
   JSON, valid Messages bodies (must pass, byte for byte), the same bodies with one field given
   a wrong type or a missing required field (must be a 400 naming that field, nothing forwarded),
   deep nesting, huge strings, invalid UTF-8, NaN/Infinity, duplicate keys, BOMs; the same for
   `count_tokens` and for the admin API bodies (a 400 creates or changes nothing).
2. Unknown methods and paths: 404 `not_found_error` / 405 `invalid_request_error`, never a 500
   (nor a redirect or an HTML page).
3. A real gunicorn (one worker) on raw sockets: CR/LF injection, 16 KB and 64 KB header values,
   bodies over OCTORELAY_MAX_BODY_MB sent slowly (with Content-Length and chunked),
   Transfer-Encoding + Content-Length smuggling, invalid chunk sizes, bodies that never finish.
   Afterwards the server answers /healthz and its only worker is the one it booted with.

   What counts as "the worker did not die": the worker PID set (children of the gunicorn master,
   read from /proc) is the same at the end as at the start, stderr has exactly one "Booting
   worker" line and none of "WORKER TIMEOUT", "Worker exiting", "Error handling request",
   octorelay's "unhandled error" (a 500 with a traceback) or "failed to record request".
   Expected on stderr: gunicorn's own "Invalid request from ip=..." warnings for the requests it
   refuses itself (bad framing, bad header syntax, limits), and octorelay's access lines.

Hypothesis runs derandomized (the same examples on every run, so CI is reproducible) with a
modest number of examples, no deadline, no example database and no "explain" phase; each
property builds its app once and reuses it, and admin properties reset the rows they touch
at the start of every example so that one stored bad value cannot fail the next example.
Batteries of hand-picked cases collect every failing case before failing (`Problems`).
"""
from __future__ import annotations

import copy
import io
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import timedelta, timezone

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app.db import db
from app.models import ApiKey, Channel, ModelPrice
from tests.support.admin import AdminClient
from tests.support.app import anthropic_channel
from tests.support.bodies import messages_bytes
from tests.support.constants import ADMIN_TOKEN, SECRETS_USED, UPSTREAM_KEY
from tests.support.processes import serve_gunicorn, wait_for_workers, worker_pids
from tests.support.raw_http import RawConn, RawResponse, exchange, healthz_ok
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer


def examples(n: int):
    """Hypothesis settings for a property that reuses one app (function-scoped fixtures)."""
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    report_multiple_bugs=False,
                    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# The status -> Anthropic error type table of docs/api.md, Errors, for the errors a client can cause.
ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}
REQUEST_ID = re.compile(r"req_[A-Za-z0-9]{24}")


def check_error(status: int, headers, body: bytes, *, context: str = "") -> dict:
    """Anthropic's error shape, a 4xx, the status's error type, the body's id = the header's id."""
    where = f"{context}: {status} {body[:300]!r}"
    assert 400 <= status < 500, where
    assert (headers.get("content-type") or "").split(";")[0].strip() == "application/json", where
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and set(parsed) == {"type", "error", "request_id"}, where
    assert parsed["type"] == "error", where
    error = parsed["error"]
    assert isinstance(error, dict) and set(error) >= {"type", "message"}, where
    assert error["type"] == ERROR_TYPE.get(status, "invalid_request_error"), where
    assert isinstance(error["message"], str) and error["message"], where
    assert REQUEST_ID.fullmatch(parsed["request_id"]), where
    assert headers.get("request-id") == parsed["request_id"], where
    return parsed


def check_error_response(resp, *, context: str = "") -> dict:
    return check_error(resp.status_code, resp.headers, resp.get_data(), context=context)


class Problems(list):
    """Findings collected over a battery of cases, all reported together at the end (one bug
    does not hide the next, and one app serves the whole battery)."""

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok

    def refused(self, responses: list[RawResponse], where: str, *, status: int | None = None,
                also: tuple = ()) -> None:
        """Exactly one answer, a 4xx (`status` when given, or one of `also` from gunicorn itself);
        Anthropic-shaped when the app wrote it."""
        summary = [(r.status, r.body[:160]) for r in responses]
        if not self.check(len(responses) == 1, f"{where}: {len(responses)} responses {summary}"):
            return
        answer = responses[0]
        expected = (400 <= answer.status < 500 and status in (None, answer.status)) or (
            answer.status in also and "request-id" not in answer.headers)
        if not self.check(expected, f"{where}: answered {answer.status} {answer.body[:200]!r}"):
            return
        if "request-id" in answer.headers:  # written by octorelay, not by gunicorn itself
            try:
                check_error(answer.status, answer.headers, answer.body, context=where)
            except AssertionError as error:
                self.append(str(error))

    def report(self) -> None:
        assert not self, f"{len(self)} problem(s):\n" + "\n".join(self)

    def run(self, where: str, check, *args, **kwargs):
        """Run an asserting `check`; an AssertionError becomes a problem named `where`."""
        try:
            return check(*args, **kwargs)
        except AssertionError as error:
            self.append(f"{where}: {str(error)[:600]}")


# --------------------------------------------------------------------------- strategies

FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=20)  # any code point but lone surrogates; NUL included
# lone surrogates too: json.dumps writes them as \udXXX escapes, which Python's json accepts back
LONE_SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udbff", "\ud83d!", "\ude00\ud83d", "x\udc00y"])
HOSTILE_TEXT = st.one_of(TEXT, TEXT, LONE_SURROGATES)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), FLOATS, TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
HOSTILE_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), FLOATS,
                           HOSTILE_TEXT)
HOSTILE_JSON = st.recursive(HOSTILE_SCALAR, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(HOSTILE_TEXT, inner, max_size=3), max_leaves=6)
SMALL_LIST = st.lists(SCALAR, max_size=2)
SMALL_DICT = st.dictionaries(st.text(max_size=4), SCALAR, max_size=2)

# wrong values, by what the field wants
NOT_STR = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, SMALL_LIST, SMALL_DICT)
NOT_OBJ = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, TEXT, SMALL_LIST)
NOT_LIST = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, TEXT, SMALL_DICT)
NOT_CONTENT = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, SMALL_DICT)
FRACTIONAL = FLOATS.filter(lambda f: not f.is_integer())
NOT_INT = st.one_of(st.none(), st.booleans(), FRACTIONAL, TEXT, SMALL_LIST, SMALL_DICT,
                    st.integers(max_value=-1))
# optional fields: null is left out (whether Anthropic takes null there is not ours to assert)
NN_NOT_STR = st.one_of(st.booleans(), st.integers(), FLOATS, SMALL_LIST, SMALL_DICT)
NN_NOT_OBJ = st.one_of(st.booleans(), st.integers(), FLOATS, TEXT, SMALL_LIST)
NN_NOT_LIST = st.one_of(st.booleans(), st.integers(), FLOATS, TEXT, SMALL_DICT)
NN_NOT_NUM = st.one_of(st.booleans(), TEXT, SMALL_LIST, SMALL_DICT)
NN_NOT_BOOL = st.one_of(st.integers(), FLOATS, TEXT, SMALL_LIST, SMALL_DICT)
NN_NOT_INT = st.one_of(st.booleans(), FRACTIONAL, TEXT, SMALL_LIST, SMALL_DICT, st.integers(max_value=-1))

ROLES = ("user", "assistant", "system")
BLOCK_TYPES = ("text", "image", "document", "tool_use", "server_tool_use", "tool_result", "thinking",
               "redacted_thinking")
KNOWN_FIELDS = ("model", "messages", "max_tokens", "system", "stream", "temperature", "top_p", "top_k",
                "stop_sequences", "tools", "tool_choice", "thinking", "metadata", "service_tier",
                "container", "mcp_servers", "context_management", "output_config", "output_format")

CACHE = st.fixed_dictionaries({"type": st.just("ephemeral")})


def block(required: dict, optional: dict | None = None):
    return st.fixed_dictionaries(required, optional=optional or {})


TEXT_BLOCK = block({"type": st.just("text"), "text": TEXT}, {"cache_control": CACHE})
IMAGE_SOURCES = {
    "base64": block({"type": st.just("base64"), "media_type": st.sampled_from(["image/png", "image/jpeg"]),
                     "data": st.text("ABCDEFabcdef0123456789+/=", max_size=16)}),
    "url": block({"type": st.just("url"), "url": st.just("https://example.com/cat.png")}),
    "file": block({"type": st.just("file"), "file_id": TEXT}),
    # source types octorelay does not know pass (forward compatibility)
    "other": block({"type": st.text(min_size=1, max_size=8).filter(lambda t: t not in ("base64", "url", "file"))},
                   {"extra": JSON}),
}
IMAGE_BLOCK = block({"type": st.just("image"), "source": st.one_of(*IMAGE_SOURCES.values())},
                    {"cache_control": CACHE})
DOCUMENT_BLOCK = block({"type": st.just("document"),
                        "source": block({"type": st.sampled_from(["text", "base64", "url", "content", "file"])},
                                        {"media_type": TEXT, "data": TEXT, "url": TEXT})},
                       {"title": TEXT, "context": TEXT})
TOOL_USE_BLOCK = block({"type": st.sampled_from(["tool_use", "server_tool_use"]), "id": TEXT, "name": TEXT,
                        "input": st.dictionaries(st.text(max_size=6), JSON, max_size=3)})
TOOL_RESULT_BLOCK = block({"type": st.just("tool_result"), "tool_use_id": TEXT},
                          {"content": st.one_of(TEXT, st.lists(TEXT_BLOCK | IMAGE_BLOCK, max_size=2)),
                           "is_error": st.booleans(), "cache_control": CACHE})
THINKING_BLOCK = block({"type": st.just("thinking"), "thinking": TEXT, "signature": TEXT})
REDACTED_BLOCK = block({"type": st.just("redacted_thinking"), "data": TEXT})
UNKNOWN_BLOCK = st.builds(lambda extra, kind: {**extra, "type": kind},
                          st.dictionaries(st.text(max_size=6), JSON, max_size=3),
                          st.text(max_size=12).filter(lambda t: t not in BLOCK_TYPES))
VALID_BLOCK = st.one_of(TEXT_BLOCK, IMAGE_BLOCK, DOCUMENT_BLOCK, TOOL_USE_BLOCK, TOOL_RESULT_BLOCK,
                        THINKING_BLOCK, REDACTED_BLOCK, UNKNOWN_BLOCK)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(ROLES),
                                 "content": st.one_of(TEXT, st.lists(VALID_BLOCK, max_size=3))})

OPTIONAL_VALID = {
    "system": st.one_of(TEXT, st.lists(TEXT_BLOCK, max_size=2)),
    "stream": st.booleans(),
    "temperature": st.one_of(st.floats(0, 1), st.integers(0, 1)),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(0, 500),
    "stop_sequences": st.lists(TEXT, max_size=3),
    "tools": st.lists(block({"name": TEXT, "input_schema": st.just({"type": "object"})},
                            {"description": TEXT, "defer_loading": st.booleans()}), max_size=2),
    "tool_choice": block({"type": st.sampled_from(["auto", "any", "none", "tool"])},
                         {"name": TEXT, "disable_parallel_tool_use": st.booleans()}),
    "thinking": st.one_of(block({"type": st.just("enabled"), "budget_tokens": st.integers(1024, 64000)}),
                          block({"type": st.sampled_from(["disabled", "adaptive"])})),
    "metadata": block({}, {"user_id": st.none() | TEXT}),
    "service_tier": st.sampled_from(["auto", "standard_only"]),
    "container": st.one_of(st.none(), TEXT, SMALL_DICT),
    "mcp_servers": st.lists(SMALL_DICT, max_size=2),
    "context_management": st.one_of(st.none(), SMALL_DICT),
    "output_config": SMALL_DICT,
    "output_format": st.one_of(st.none(), SMALL_DICT),
}

OPTIONAL_WRONG = {
    "system": st.one_of(st.booleans(), st.integers(), FLOATS, SMALL_DICT),
    "stream": NN_NOT_BOOL,
    "temperature": NN_NOT_NUM,
    "top_p": NN_NOT_NUM,
    "top_k": NN_NOT_INT,
    "stop_sequences": NN_NOT_LIST,
    "tools": NN_NOT_LIST,
    "tool_choice": NN_NOT_OBJ,
    "thinking": NN_NOT_OBJ,
    "metadata": NN_NOT_OBJ,
    "service_tier": NN_NOT_STR,
    "container": st.one_of(st.booleans(), st.integers(), FLOATS, SMALL_LIST),
    "mcp_servers": NN_NOT_LIST,
    "output_config": NN_NOT_OBJ,
}


@st.composite
def valid_body(draw, count_tokens: bool = False) -> dict:
    """A body Anthropic accepts for shape; octorelay must forward it untouched."""
    body = {"model": draw(st.text(min_size=1, max_size=40)),
            "messages": draw(st.lists(MESSAGE, min_size=1, max_size=3))}
    if not count_tokens or draw(st.booleans()):
        body["max_tokens"] = draw(st.one_of(st.integers(0, 128_000), st.integers(0, 2 ** 64)))
    for name, strategy in OPTIONAL_VALID.items():
        if draw(st.integers(0, 3)) == 0:
            body[name] = draw(strategy)
    # unknown top-level fields pass through (forward compatibility)
    body.update(draw(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in KNOWN_FIELDS),
                                     JSON, max_size=2)))
    keys = draw(st.permutations(list(body)))
    return {k: body[k] for k in keys}


@st.composite
def serialized(draw, bodies) -> tuple[dict, bytes]:
    body = draw(bodies)
    raw = json.dumps(body, ensure_ascii=draw(st.booleans()),
                     separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
                     indent=draw(st.sampled_from([None, 2]))).encode("utf-8")
    return body, raw


_MISSING = object()


def _with(obj: dict, key: str, value) -> dict:
    out = copy.deepcopy(obj)
    if value is _MISSING:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def missing_or(strategy):
    return st.one_of(st.just(_MISSING), strategy)


def _broken_blocks():
    """(block, path suffix) pairs: one known content block with exactly one shape error."""
    cases = [
        NOT_OBJ.map(lambda v: (v, "")),
        st.tuples(VALID_BLOCK, missing_or(NOT_STR)).map(lambda t: (_with(t[0], "type", t[1]), ".type")),
    ]
    required = {
        TEXT_BLOCK: {"text": NOT_STR},
        TOOL_USE_BLOCK: {"id": NOT_STR, "name": NOT_STR, "input": NOT_OBJ},
        TOOL_RESULT_BLOCK: {"tool_use_id": NOT_STR},
        THINKING_BLOCK: {"thinking": NOT_STR, "signature": NOT_STR},
        REDACTED_BLOCK: {"data": NOT_STR},
        IMAGE_BLOCK: {"source": NOT_OBJ},
        DOCUMENT_BLOCK: {"source": NOT_OBJ},
    }
    for valid, fields in required.items():
        for name, wrong in fields.items():
            cases.append(st.tuples(valid, missing_or(wrong)).map(
                lambda t, name=name: (_with(t[0], name, t[1]), f".{name}")))

    def broken_source(kind_block, sub):
        return st.tuples(kind_block, missing_or(NOT_STR)).map(
            lambda t: ({**t[0], "source": _with(t[0]["source"], sub, t[1])}, f".source.{sub}"))

    for kind, subs in (("base64", ("type", "media_type", "data")), ("url", ("url",)), ("file", ("file_id",))):
        image = block({"type": st.just("image"), "source": IMAGE_SOURCES[kind]})
        cases += [broken_source(image, sub) for sub in subs]
    cases.append(broken_source(DOCUMENT_BLOCK, "type"))
    cases += [
        st.tuples(TOOL_RESULT_BLOCK, NOT_CONTENT).map(lambda t: (_with(t[0], "content", t[1]), ".content")),
        st.tuples(TOOL_RESULT_BLOCK, st.lists(TEXT_BLOCK, max_size=2), NOT_OBJ).map(
            lambda t: (_with(t[0], "content", t[1] + [t[2]]), f".content.{len(t[1])}")),
        st.tuples(TOOL_RESULT_BLOCK, NN_NOT_BOOL).map(lambda t: (_with(t[0], "is_error", t[1]), ".is_error")),
    ]
    return st.one_of(*cases)


BROKEN_BLOCK = _broken_blocks()


def _pick_message(draw, body) -> int:
    return draw(st.integers(0, len(body["messages"]) - 1))


def _blocks_of(message: dict) -> list:
    if not isinstance(message.get("content"), list):
        message["content"] = []
    return message["content"]


def m_required_wrong(draw, body, count_tokens):
    name = draw(st.sampled_from(["model", "max_tokens", "messages"]))
    wrong = {"model": NOT_STR | st.just(""), "max_tokens": NOT_INT, "messages": NOT_LIST | st.just([])}
    body[name] = draw(wrong[name])
    return name


def m_required_missing(draw, body, count_tokens):
    name = draw(st.sampled_from(["model", "messages"] + ([] if count_tokens else ["max_tokens"])))
    body.pop(name, None)
    return name


def m_message_not_object(draw, body, count_tokens):
    i = _pick_message(draw, body)
    body["messages"][i] = draw(NOT_OBJ)
    return f"messages.{i}"


def m_role(draw, body, count_tokens):
    i = _pick_message(draw, body)
    body["messages"][i] = _with(body["messages"][i], "role", draw(missing_or(
        NOT_STR | st.text(max_size=12).filter(lambda r: r not in ROLES))))
    return f"messages.{i}.role"


def m_content(draw, body, count_tokens):
    i = _pick_message(draw, body)
    body["messages"][i] = _with(body["messages"][i], "content", draw(missing_or(NOT_CONTENT)))
    return f"messages.{i}.content"


def m_block(draw, body, count_tokens):
    i = _pick_message(draw, body)
    blocks = _blocks_of(body["messages"][i])
    j = draw(st.integers(0, len(blocks)))
    bad, suffix = draw(BROKEN_BLOCK)
    blocks.insert(j, bad)
    return f"messages.{i}.content.{j}{suffix}"


def m_system_block(draw, body, count_tokens):
    blocks = draw(st.lists(TEXT_BLOCK, max_size=2))
    j = draw(st.integers(0, len(blocks)))
    bad, suffix = draw(BROKEN_BLOCK)
    blocks.insert(j, bad)
    body["system"] = blocks
    return f"system.{j}{suffix}"


def m_optional_wrong(draw, body, count_tokens):
    name = draw(st.sampled_from(sorted(OPTIONAL_WRONG)))
    body[name] = draw(OPTIONAL_WRONG[name])
    return name


def m_inner(draw, body, count_tokens):
    kind = draw(st.sampled_from(["tools", "mcp_servers", "stop_sequences", "tool_choice", "thinking"]))
    if kind in ("tools", "mcp_servers", "stop_sequences"):
        good = st.lists(TEXT if kind == "stop_sequences" else SMALL_DICT, max_size=2)
        items = draw(good)
        j = draw(st.integers(0, len(items)))
        items.insert(j, draw(NOT_STR if kind == "stop_sequences" else NOT_OBJ))
        body[kind] = items
        return f"{kind}.{j}"
    body[kind] = _with(draw(OPTIONAL_VALID[kind]), "type", draw(missing_or(NOT_STR)))
    return f"{kind}.type"


MUTATIONS = [m_required_wrong, m_required_missing, m_message_not_object, m_role, m_content, m_block,
             m_system_block, m_optional_wrong, m_inner]


@st.composite
def broken_body(draw, count_tokens: bool = False) -> tuple[dict, str]:
    """A valid body with exactly one shape error; returns it and the field path the 400 must name."""
    body = copy.deepcopy(draw(valid_body(count_tokens=count_tokens)))
    mutation = draw(st.sampled_from(MUTATIONS))
    return body, mutation(draw, body, count_tokens)


# --------------------------------------------------------------------------- client-side harness


def _upstream_answer(request):
    try:
        streaming = json.loads(request.body).get("stream") is True
    except (ValueError, AttributeError, RecursionError):
        streaming = False
    if streaming:
        return sse_answer(anthropic_stream_events())
    return json_answer(anthropic_message())


@dataclass
class Answer:
    status: int
    headers: object
    data: bytes
    mimetype: str
    forwarded: list = field(default_factory=list)


class AdminAPI:
    """conftest's Admin (the admin token on every call) with a plain repr: hypothesis prints the
    arguments of a falsifying example, and Admin answers any attribute, `_repr_pretty_` included."""

    def __init__(self, admin):
        self._admin = admin

    def __repr__(self) -> str:
        return "AdminAPI()"

    def call(self, method: str, path: str, **kwargs):
        return getattr(self._admin, method)(path, **kwargs)

    def get(self, path: str, **kwargs):
        return self.call("get", path, **kwargs)

    def create_key(self, **fields) -> dict:
        created = self._admin.create_key(**fields)
        SECRETS_USED.add(created["key"])
        return created

    def create_channel(self, **fields) -> dict:
        return self._admin.create_channel(**fields)


@pytest.fixture
def admin_api(admin) -> AdminAPI:
    return AdminAPI(admin)


@dataclass(repr=False)
class Relay:
    """The app with one anthropic channel (every model) at the scripted upstream and one key."""
    app: object
    client: object
    admin: object
    upstream: object
    key: str
    channel_id: int

    def post(self, raw: bytes, path: str = "/v1/messages", headers: dict | None = None) -> Answer:
        before = len(self.upstream.requests)
        resp = self.client.post(path, data=raw, headers={"x-api-key": self.key, "content-type": "application/json",
                                                         **(headers or {})})
        data = resp.get_data()  # a stream is consumed here
        return Answer(resp.status_code, resp.headers, data, resp.mimetype, self.upstream.requests[before:])

    def post_without_length(self, raw: bytes, path: str = "/v1/messages") -> Answer:
        """As a chunked request reaches the app: no CONTENT_LENGTH, the input stream ends at EOF."""
        before = len(self.upstream.requests)
        environ = EnvironBuilder(path=path, method="POST", input_stream=io.BytesIO(raw),
                                 headers={"x-api-key": self.key, "content-type": "application/json"}).get_environ()
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
        app_iter, status, headers = run_wsgi_app(self.app, environ, buffered=True)
        data = b"".join(app_iter)
        return Answer(int(status.split()[0]), headers, data, headers.get("content-type", "").split(";")[0],
                      self.upstream.requests[before:])

    def channel_failures(self) -> int:
        resp = self.admin.get(f"/admin/channels/{self.channel_id}")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()["consecutive_failures"]

    def __repr__(self) -> str:
        return "Relay()"


@pytest.fixture
def relay(app, client, admin, upstream) -> Relay:
    channel = anthropic_channel(admin, upstream, models=["*"])
    api = AdminAPI(admin)
    key = api.create_key(name="hostile")["key"]
    upstream.set_default(_upstream_answer)
    upstream.set_default(json_answer({"input_tokens": 7}), path="/v1/messages/count_tokens")
    return Relay(app, client, api, upstream, key, channel["id"])


def check_relay_answer(answer: Answer, raw: bytes, *, count_tokens: bool = False, context: str = "") -> None:
    """A 200 success whose upstream got exactly the client's bytes, or an error and no upstream call."""
    where = f"{context}: {answer.status} {answer.data[:300]!r} for {raw[:200]!r}"
    if answer.status == 200:
        assert len(answer.forwarded) == 1, where
        sent = answer.forwarded[0]
        assert sent.body == raw, where  # untouched: no defaults injected, nothing rewritten
        assert sent.path.split("?")[0] == ("/v1/messages/count_tokens" if count_tokens else "/v1/messages"), where
        assert sent.headers.get("x-api-key") == UPSTREAM_KEY, where  # never the client's key
        assert REQUEST_ID.fullmatch(answer.headers.get("request-id") or ""), where
        if count_tokens:
            assert isinstance(json.loads(answer.data)["input_tokens"], int), where
        elif answer.mimetype == "text/event-stream":
            assert b"event: message_start" in answer.data and b"event: message_stop" in answer.data, where
        else:
            assert json.loads(answer.data)["type"] == "message", where
        return
    check_error(answer.status, answer.headers, answer.data, context=where)
    assert answer.forwarded == [], f"{where}: a {answer.status}, yet the upstream got {answer.forwarded}"


def check_invalid(answer: Answer, path: str | None = None, *, context: str = "") -> str:
    """400 invalid_request_error, naming `path` when given, and nothing forwarded."""
    where = f"{context}: {answer.status} {answer.data[:400]!r}"
    assert answer.status == 400, where
    body = check_error(answer.status, answer.headers, answer.data, context=where)
    assert answer.forwarded == [], f"{where}: forwarded {answer.forwarded}"
    message = body["error"]["message"]
    if path is not None:
        assert f"{path}:" in message, f"{where}: the message should name {path!r}"
    return message


# --------------------------------------------------------------------------- 1. client bodies


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


# --------------------------------------------------------------------------- 1b. admin bodies

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


# --------------------------------------------------------------------------- 2. methods and paths

CLIENT_ROUTES = ["/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/v1/models/claude-sonnet-4-5"]
ROUTE_METHODS = {"/v1/messages": {"POST"}, "/v1/messages/count_tokens": {"POST"}, "/v1/models": {"GET", "HEAD"},
                 "/v1/models/claude-sonnet-4-5": {"GET", "HEAD"}}


def check_405(resp, method: str) -> None:
    body = check_error_response(resp)
    assert resp.status_code == 405, (resp.status_code, body)
    assert method not in resp.headers.get("allow", ""), resp.headers.get("allow")


def test_client_routes_refuse_other_methods_with_405(relay):
    problems = Problems()
    for route in CLIENT_ROUTES:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"):
            if method in ROUTE_METHODS[route]:
                continue
            for keyed, headers in (("without a key", {}), ("with a key", {"x-api-key": relay.key})):
                resp = relay.client.open(route, method=method, headers=headers, data=b"{}")
                problems.run(f"{method} {route} {keyed}: {resp.status_code} {resp.get_data()[:60]!r}",
                             check_405, resp, method)
    problems.report()


RAW_SEGMENTS = st.sampled_from(["", ".", "..", "%00", "%2e%2e", "%2F", "%ZZ", "%", "%FF%FE", "%0d%0aX-Injected:%201",
                                "v1", "messages", "models", "count_tokens", "admin", "keys", "channels", "prices",
                                "healthz", "readyz", "metrics", "usage", "logs", "1", ";x", "?a=1", "#f"])
SEGMENT = st.one_of(RAW_SEGMENTS, st.text(max_size=12).map(lambda s: urllib.parse.quote(s, safe="")),
                    st.integers(1000, 20_000).map(lambda n: "a" * n))
PREFIX = st.sampled_from(["", "v1", "v1/messages", "v1/models", "admin", "admin/keys", "admin/prices", "healthz"])


@examples(100)
@given(prefix=PREFIX, segments=st.lists(SEGMENT, max_size=4), trailing=st.booleans(),
       method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "FOO"]))
def test_random_paths_and_methods(relay, prefix, segments, trailing, method):
    path = "/" + "/".join([prefix, *segments] if prefix else segments) + ("/" if trailing else "")
    if path.startswith("//"):  # the test client would read "//x" as a host; raw sockets test that
        path = "/v1" + path
    resp = relay.client.open(path, method=method, headers={"x-api-key": relay.key})
    where = f"{method} {path[:200]!r}"
    if resp.status_code == 200 and method == "GET":  # it happened to name a real route
        assert resp.headers["request-id"].startswith("req_"), where
        return
    body = check_error_response(resp, context=where)
    assert resp.status_code in (400, 401, 404, 405), (where, resp.status_code, body)
    assert "x-injected" not in {name.lower() for name in resp.headers.keys()}, where


ODD_PATHS = [
    ("POST", "/v1//messages"), ("GET", "/v1//models"), ("GET", "/healthz//"), ("GET", "/admin//keys"),
    ("GET", "/v1/models//claude-sonnet-4-5"), ("POST", "//v1/messages"), ("GET", "/v1/models/%00"),
    ("GET", "/v1/../admin/keys"), ("GET", "/v1/%2e%2e/admin/keys"), ("GET", "/" + "a" * 30_000),
    ("GET", "/v1/models/%F0%9F%98%80"), ("GET", "/v1/models/%FF%FE"), ("DELETE", "/v1/models"),
]
def check_odd_path(resp) -> None:
    body = check_error_response(resp)
    assert resp.status_code in (401, 404, 405), (resp.status_code, body)


def test_odd_paths_are_anthropic_errors(relay):
    problems = Problems()
    for method, path in ODD_PATHS:
        resp = relay.client.open(path, method=method, headers={"x-api-key": relay.key})
        problems.run(f"{method} {path[:60]}: {resp.status_code} {resp.get_data()[:60]!r}", check_odd_path, resp)
    problems.report()


# --------------------------------------------------------------------------- 3. a real gunicorn, raw sockets

HOST = "127.0.0.1"
LIMIT_MB = 0.05
LIMIT = int(LIMIT_MB * 1024 * 1024)
SOCKET_TIMEOUT = 5.0
SMALL_BODY = messages_bytes("claude-x", 5)


UNEXPECTED_STDERR = ("WORKER TIMEOUT", "Worker exiting", "Error handling request", '"unhandled error"',
                     "failed to record request", "Traceback")


@dataclass
class Gunicorn:
    port: int
    proc: object
    admin: AdminClient
    key: str
    channel_id: int
    upstream: object
    workers: set

    def request(self, method: str, path: str, *, headers: bytes = b"", body: bytes = b"",
                framing: bytes | None = None) -> bytes:
        if framing is None:
            framing = b"Content-Length: %d\r\n" % len(body)
        return (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nx-api-key: {self.key}\r\n".encode()
                + b"content-type: application/json\r\n" + headers + framing + b"\r\n" + body)

    def admin_request(self, method: str, path: str, *, body: bytes = b"", framing: bytes | None = None) -> bytes:
        if framing is None:
            framing = b"Content-Length: %d\r\n" % len(body)
        return (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n".encode()
                + b"content-type: application/json\r\n" + framing + b"\r\n" + body)

    def channel_failures(self) -> int:
        return self.admin("GET", f"/admin/channels/{self.channel_id}").json()["consecutive_failures"]

    def unexpected_stderr(self) -> list[str]:
        return [line for line in self.proc.stderr.splitlines() if any(bad in line for bad in UNEXPECTED_STDERR)]

    def assert_survived(self) -> None:
        assert healthz_ok(self.port), "the server stopped answering /healthz"
        assert self.proc.popen.poll() is None, "the gunicorn master exited"
        assert worker_pids(self.proc.popen.pid) == self.workers, "the worker was replaced"
        stderr = self.proc.stderr
        assert stderr.count("Booting worker with pid") == 1, stderr[-3000:]
        assert self.unexpected_stderr() == [], "\n".join(line[:600] for line in self.unexpected_stderr())


@pytest.fixture
def gunicorn(env, procs, upstream):
    served = serve_gunicorn(procs, env, workers=1, threads=16, LOG_LEVEL="info",
                            OCTORELAY_MAX_BODY_MB=str(LIMIT_MB))
    proc, port, admin = served.proc, served.port, served.admin
    channel = admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                                   models=["claude-*"])
    key = admin.create_key(name="hostile")["key"]
    SECRETS_USED.add(key)
    workers = wait_for_workers(proc)
    assert len(workers) == 1, workers
    return Gunicorn(port, proc, admin, key, channel["id"], upstream, workers)


@pytest.mark.slow
def test_gunicorn_header_attacks(gunicorn):
    g, problems = gunicorn, Problems()
    port = g.port
    bad_syntax = {
        "bare CR in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: 1\r\n\r\n",
        "bare LF in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\nX-Injected: 1\r\n\r\n",
        "bare LF line ends": b"GET /healthz HTTP/1.1\nHost: x\nX-Injected: 1\n\n",
        "NUL in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        "control char in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n",
        "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n X-Injected: 1\r\n\r\n",
        "space before colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n",
        "space in a name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: a\r\n\r\n",
        "CR in a name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\rA: a\r\n\r\n",
        "no colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Injected\r\n\r\n",
        "CRLF in the request line": b"GET /healthz\r\nX-Injected: 1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "lowercase method": b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "NUL in the method": b"GE\x00T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "NUL in the target": b"GET /healthz\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        "request line over the limit": b"GET /healthz?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "a 64 KB header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 65_536 + b"\r\n\r\n",
        "a 64 KB anthropic-beta": g.request("POST", "/v1/messages", body=SMALL_BODY,
                                            headers=b"anthropic-beta: " + b"b" * 65_536 + b"\r\n"),
        "300 headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(300))
                       + b"\r\n",
    }
    forwarded_before = len(g.upstream.requests)
    for where, data in bad_syntax.items():
        got = exchange(port, data, linger=0.2)
        problems.refused(got, where)
        problems.check(all("x-injected" not in r.headers for r in got), f"{where}: header injected")
        problems.check(healthz_ok(port), f"not serving after {where}")
    problems.check(len(g.upstream.requests) == forwarded_before, "a refused request reached the upstream")

    # percent-encoded CR/LF in the target must never become a response header (response splitting)
    for target in (b"/v1/models/a%0d%0aX-Injected:%201", b"/v1//models/a%0d%0aX-Injected:%201",
                   b"/nowhere%0d%0aSet-Cookie:%20a=1", b"/healthz//%0d%0aSet-Cookie:%20a=1"):
        data = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nx-api-key: " + g.key.encode() + b"\r\n\r\n"
        got = exchange(port, data)
        problems.check(len(got) == 1 and got[0].status < 500, f"{target!r}: {[(r.status, r.body[:100]) for r in got]}")
        problems.check(all(not {"x-injected", "set-cookie"} & set(r.headers) for r in got),
                       f"{target!r}: header injected {[r.headers for r in got]}")

    # a 16 KB anthropic-beta (Claude Code sends long ones) is accepted and forwarded intact
    beta = ",".join(["interleaved-thinking-2025-05-14"] * 520)[:16_384].strip(",")
    got = exchange(port, g.request("POST", "/v1/messages", body=SMALL_BODY,
                                   headers=f"anthropic-beta: {beta}\r\n".encode()))
    if problems.check([r.status for r in got] == [200],
                      f"16 KB anthropic-beta: {[(r.status, r.body[:200]) for r in got]}"):
        problems.check(g.upstream.requests[-1].headers["anthropic-beta"] == beta, "16 KB anthropic-beta altered")

    # obs-text (bytes 0x80-0xFF) passes gunicorn; forwarded, it is the client's problem, not the channel's
    for name in (b"anthropic-beta", b"anthropic-version"):
        for value in (b"\xa0x", b"\x85x"):
            for _ in range(3):  # three failures in a row would put the only channel into a cooldown
                got = exchange(port, g.request("POST", "/v1/messages", body=SMALL_BODY,
                                               headers=name + b": " + value + b"\r\n"))
                ok = len(got) == 1 and (got[0].status == 200 or 400 <= got[0].status < 500)
                problems.check(ok, f"{name.decode()}: {value!r} -> {[(r.status, r.body[:160]) for r in got]}")
            problems.check(g.channel_failures() == 0, f"{name.decode()}: {value!r} counted against the channel")
    problems.report()
    g.assert_survived()


@pytest.mark.slow
def test_gunicorn_body_framing_attacks(gunicorn):
    """Bodies over the limit sent slowly, request smuggling, broken chunked framing."""
    g, problems = gunicorn, Problems()
    port = g.port
    forwarded_before = len(g.upstream.requests)

    # over the limit, sent slowly: refused (413) before the client has finished sending
    total = 10 * 1024 * 1024
    piece = b"x" * 1024
    chunk = b"400\r\n" + piece + b"\r\n"
    for where, head, framed in (
            ("content-length", g.request("POST", "/v1/messages", framing=b"Content-Length: %d\r\n" % total), piece),
            ("chunked", g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n"), chunk),
            ("count_tokens, chunked", g.request("POST", "/v1/messages/count_tokens",
                                                framing=b"Transfer-Encoding: chunked\r\n"), chunk),
            ("admin, content-length", g.admin_request("POST", "/admin/keys",
                                                      framing=b"Content-Length: %d\r\n" % total), piece)):
        conn = RawConn(port)
        try:
            conn.send(head)
            sent, deadline = 0, time.monotonic() + 15
            while sent < total and time.monotonic() < deadline and not conn.readable(0.002):
                if not conn.send(framed):
                    break
                sent += len(piece)
            got = conn.responses(timeout=5, linger=0)
        finally:
            conn.close()
        problems.check(sent < total, f"{where}: all {total} bytes were taken before an answer")
        problems.check(sent <= 4 * LIMIT, f"{where}: {sent} bytes taken before the answer (limit {LIMIT})")
        problems.refused(got, f"oversized, {where}", status=413)
        problems.check(healthz_ok(port), f"not serving after oversized, {where}")

    # request smuggling: Transfer-Encoding together with Content-Length (and relatives)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    for where, framing, body in (
            ("CL then TE", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + smuggled),
            ("TE then CL", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
             b"5\r\nhello\r\n0\r\n\r\n" + smuggled),
            ("TE list", b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + smuggled),
            ("TE twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + smuggled),
            ("TE not chunked", b"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + smuggled),
            ("TE xchunked", b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + smuggled),
            ("TE with a tab", b"Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n", b"0\r\n\r\n" + smuggled),
            ("two lengths", b"Content-Length: 5\r\nContent-Length: 0\r\n", b"hello" + smuggled),
            ("length list", b"Content-Length: 0, 5\r\n", b"hello" + smuggled),
            ("signed length", b"Content-Length: +0\r\n", smuggled),
            ("negative length", b"Content-Length: -1\r\n", smuggled),
            ("hex length", b"Content-Length: 0x0\r\n", smuggled)):
        got = exchange(port, g.request("POST", "/v1/messages", framing=framing, body=body), linger=0.3)
        problems.refused(got, f"smuggling, {where}", also=(501,))  # 501: a transfer coding gunicorn lacks
    http10 = (b"POST /v1/messages HTTP/1.0\r\nHost: x\r\nx-api-key: " + g.key.encode()
              + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
    problems.refused(exchange(port, http10, linger=0.3), "smuggling, chunked HTTP/1.0")
    problems.check('"route":"/smuggled"' not in g.proc.stderr, "a smuggled request was processed")
    problems.check(len(g.upstream.requests) == forwarded_before, "a refused request reached the upstream")

    # broken chunked framing is the client's error: a 400 -- from gunicorn, or in Anthropic's shape --
    # on the client API and the admin API, never a 500 with a traceback
    for where, chunks in (("not hex", b"zz\r\nabc\r\n0\r\n\r\n"), ("negative", b"-1\r\nabc\r\n0\r\n\r\n"),
                          ("0x prefix", b"0x3\r\nabc\r\n0\r\n\r\n"),
                          ("underscore", b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
                          ("space inside", b"1 0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
                          ("data longer than its size", b"3\r\nabcdef\r\n0\r\n\r\n"),
                          ("no CRLF after the data", b"3\r\nabcXY0\r\n\r\n"),
                          ("NUL in the size", b"3\x00\r\nabc\r\n0\r\n\r\n")):
        for route, request in (
                ("/v1/messages", g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n",
                                           body=chunks)),
                ("/admin/keys", g.admin_request("POST", "/admin/keys", framing=b"Transfer-Encoding: chunked\r\n",
                                                body=chunks))):
            problems.refused(exchange(port, request, linger=0.3), f"chunked, {where}, {route}", status=400)
        problems.check(healthz_ok(port), f"not serving after chunked, {where}")
    problems.check(len(g.upstream.requests) == forwarded_before, "a body with broken framing reached the upstream")
    # still a relay: a normal request afterwards succeeds, with a chunked body too
    for framing, body in ((None, SMALL_BODY),
                          (b"Transfer-Encoding: chunked\r\n",
                           b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMALL_BODY), SMALL_BODY))):
        got = exchange(port, g.request("POST", "/v1/messages", framing=framing, body=body))
        if problems.check([r.status for r in got] == [200],
                          f"a normal request: {[(r.status, r.body[:200]) for r in got]}"):
            problems.check(g.upstream.requests[-1].body == SMALL_BODY, "a normal body arrived altered")
    problems.report()
    g.assert_survived()


@pytest.mark.slow
def test_gunicorn_bodies_that_never_finish(gunicorn):
    """No answer is owed while a client may still send its body, but the server keeps serving
    others meanwhile, and a client giving up mid-body is not a server error."""
    g, problems = gunicorn, Problems()
    port = g.port
    stalled = {
        "content-length, 1 of 100 bytes": g.request("POST", "/v1/messages", framing=b"Content-Length: 100\r\n",
                                                    body=b"{"),
        "chunked, half a chunk": g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n",
                                           body=b"10\r\n{\"model\""),
        "chunked, between chunks": g.request("POST", "/v1/messages/count_tokens",
                                             framing=b"Transfer-Encoding: chunked\r\n", body=b"1\r\n{\r\n"),
        "chunk size 2**96": g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n",
                                      body=b"ffffffffffffffffffffffff\r\nabc\r\n"),
        "admin, content-length": g.admin_request("POST", "/admin/keys", framing=b"Content-Length: 100\r\n",
                                                 body=b"{"),
        "admin, chunked": g.admin_request("POST", "/admin/channels", framing=b"Transfer-Encoding: chunked\r\n",
                                          body=b"10\r\n{"),
        "headers never end": b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + g.key.encode() + b"\r\n",
    }
    conns = {}
    try:
        for where, data in stalled.items():
            conns[where] = conn = RawConn(port)
            conn.send(data)
        time.sleep(1.0)
        for where, conn in conns.items():
            for answer in conn.responses(timeout=0.2, linger=0):  # an early refusal is fine, a 5xx is not
                problems.check(400 <= answer.status < 500, f"{where}: {answer.status} {answer.body[:200]!r}")
        started = time.monotonic()
        problems.check(healthz_ok(port), "the server stopped serving while requests were stalled")
        problems.check(time.monotonic() - started < 2.0, "/healthz was slow while requests were stalled")
    finally:
        for conn in conns.values():
            conn.close()  # the client gives up
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and not g.unexpected_stderr():
        time.sleep(0.1)  # give the server time to notice (and to log, if it logs an error)
    problems.check(g.unexpected_stderr() == [], "a client giving up mid-body was logged as a server error:\n"
                   + "\n".join(line[:400] for line in g.unexpected_stderr()))
    problems.check(healthz_ok(port), "not serving after the stalled clients left")
    problems.check(g.upstream.requests == [], "an unfinished body reached the upstream")
    got = exchange(port, g.request("POST", "/v1/messages", body=SMALL_BODY))
    problems.check([r.status for r in got] == [200], f"a normal request: {[(r.status, r.body[:200]) for r in got]}")
    problems.report()
    g.assert_survived()
