"""The client-side harness: the relay through the Flask test client with an upstream that
records what reached it (`Relay`), the admin API on raw bytes (`AdminAPI`), and the checks of
what an answer to a valid or an invalid body must be."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.hostile.checks import REQUEST_ID, check_error
from tests.support.constants import SECRETS_USED, UPSTREAM_KEY
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer


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
