"""The closed-loop load clients and what each request came to (`Outcome`)."""
from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests

from bench.soak.settings import (ALLOWED_STATUS, KEYS, KIND_WEIGHTS, MODEL_WEIGHTS, NO_CHANNEL_MODEL,
                                 REQUEST_TIMEOUT, STREAM_DEADLINE_S, TOKEN_FIELDS)
from bench.soak.upstream import words

if TYPE_CHECKING:
    from bench.soak.soak import Soak


@dataclass
class Outcome:
    kind: str
    key: str
    model: str
    status: int | None = None
    request_id: str | None = None
    error_type: str | None = None
    usage: dict | None = None  # what the client saw, for answers that completed
    disconnected: bool = False  # we hung up mid-stream
    stream_error: bool = False  # an `event: error` arrived in a 200 stream
    problem: str | None = None  # no answer, a malformed answer, a stream that never ended
    seconds: float = 0.0


def merge_usage(into: dict, usage) -> None:
    """docs/api.md, Accounting: cumulative counts; a later non-null value wins, a missing or null one never erases."""
    if not isinstance(usage, dict):
        return
    for name in TOKEN_FIELDS:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            into[name] = value


def sse_events(chunks, deadline: float):
    """(event, data) pairs from an iterator of byte chunks; stops at `deadline`."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            name, data = None, []
            for line in block.decode("utf-8", "replace").split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
            yield name, "\n".join(data)
        if time.monotonic() > deadline:
            raise TimeoutError("stream did not end in time")


class LoadClient:
    """One closed-loop client: a keep-alive session, one request at a time until told to stop."""

    def __init__(self, soak: "Soak", index: int, seed: int):
        self.soak = soak
        self.rng = random.Random(seed)
        self.index = index
        self.session: requests.Session | None = None
        self.sent = 0

    def run(self, stop: threading.Event, deadline: float, max_requests: int) -> None:
        try:
            while not stop.is_set() and time.monotonic() < deadline and self.sent < max_requests:
                outcome = self.one()
                self.sent += 1
                self.soak.record(outcome)
                if outcome.disconnected or outcome.problem or self.sent % 100 == 0:
                    self._close()  # a fresh connection now and then: both workers get clients
        except Exception as exc:  # a bug in the client itself must not pass silently
            self.soak.record(Outcome("client", "-", "-", problem=f"client crashed: {exc!r}"))
        finally:
            self._close()

    def _close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def one(self) -> Outcome:
        rng = self.rng
        kind = pick(rng, KIND_WEIGHTS)
        key_name = pick(rng, {name: weight for name, _, weight in KEYS})
        model = NO_CHANNEL_MODEL if kind == "no_channel" else pick(rng, MODEL_WEIGHTS)
        stream = kind in ("stream", "disconnect") or (kind == "no_channel" and rng.random() < 0.5)
        body = {"model": model, "max_tokens": rng.randint(16, 1024),
                "messages": [{"role": "user", "content": " ".join(words(rng, 5, 400))}],
                "metadata": {"user_id": f"soak-{kind}"}}
        if stream:
            body["stream"] = True
        path = "/v1/messages"
        if kind == "count_tokens":
            path += "/count_tokens"
            del body["max_tokens"]
        elif kind == "invalid":
            del body["max_tokens"]  # a 400 from validation: never reaches routing
        if self.session is None:
            self.session = requests.Session()
            self.session.trust_env = False
        headers = {"x-api-key": self.soak.key_secrets[key_name], "anthropic-version": "2023-06-01"}
        outcome = Outcome(kind, key_name, model)
        started = time.monotonic()
        try:
            resp = self.session.post(self.soak.base_url + path, json=body, headers=headers,
                                     timeout=REQUEST_TIMEOUT, stream=True)
        except requests.RequestException as exc:
            outcome.problem = f"no answer: {type(exc).__name__}"
            return outcome
        try:
            outcome.status = resp.status_code
            outcome.request_id = resp.headers.get("request-id")
            if resp.status_code == 200 and stream:
                self._read_stream(resp, outcome, hang_up=kind == "disconnect")
            else:
                self._read_json(resp, outcome)
        except (requests.RequestException, TimeoutError, ValueError) as exc:
            outcome.problem = f"broken answer: {type(exc).__name__}: {exc}"
        finally:
            resp.close()
            outcome.seconds = time.monotonic() - started
        if outcome.status not in ALLOWED_STATUS[kind] and outcome.problem is None:
            outcome.problem = f"unexpected status {outcome.status} ({outcome.error_type})"
        return outcome

    @staticmethod
    def _read_json(resp, outcome: Outcome) -> None:
        payload = json.loads(resp.content)
        if resp.status_code == 200:
            if outcome.kind != "count_tokens":
                outcome.usage = {f: payload["usage"].get(f) or 0 for f in TOKEN_FIELDS}
        else:
            outcome.error_type = payload["error"]["type"]
            if payload.get("request_id") != outcome.request_id:
                outcome.problem = "error body's request_id differs from the request-id header"

    @staticmethod
    def _read_stream(resp, outcome: Outcome, hang_up: bool) -> None:
        usage: dict = {}
        ended = False
        deadline = time.monotonic() + STREAM_DEADLINE_S
        for name, data in sse_events(resp.iter_content(chunk_size=None), deadline):
            if name == "message_start":
                merge_usage(usage, json.loads(data)["message"].get("usage"))
            elif name == "message_delta":
                merge_usage(usage, json.loads(data).get("usage"))
            elif name == "content_block_delta" and hang_up:
                outcome.disconnected = True
                return  # the finally closes the response: the connection goes away mid-stream
            elif name == "error":
                outcome.stream_error = True
                outcome.error_type = json.loads(data)["error"]["type"]
            elif name == "message_stop":
                ended = True
        if hang_up:
            outcome.problem = "the slow stream ended before the client could hang up"
        elif not ended and not outcome.stream_error:
            outcome.problem = "stream ended without message_stop or an error event"
        elif ended:
            outcome.usage = {f: usage.get(f, 0) for f in TOKEN_FIELDS}


def pick(rng: random.Random, weights: dict) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]
