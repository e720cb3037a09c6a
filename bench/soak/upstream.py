"""The scripted upstream channels: a flaky one and a healthy one, answering with random usage."""
from __future__ import annotations

import random
import threading
from collections import Counter

from bench.soak.settings import DISCONNECT_CHUNKS, DISCONNECT_DELAY, TOKEN_FIELDS
from tests.support.upstream import (DropAnswer, anthropic_message, anthropic_stream_events, error_answer,
                                    json_answer, sse_answer, sse_then_drop)


class ScriptedChannel:
    """Answers one channel's upstream requests: valid messages and streams with random usage,
    and, for `fail_rate` of them, a 500, a 529, a dropped connection or a stream cut short."""

    def __init__(self, name: str, fail_rate: float, seed: int):
        self.name = name
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter = Counter()

    def __call__(self, request):
        with self.lock:
            roll, fate, rng = self.rng.random(), self.rng.random(), random.Random(self.rng.random())
        if request.path.split("?", 1)[0].endswith("/count_tokens"):
            if roll < self.fail_rate:
                return self._fail(fate, stream=False, may_cut=False, path="count_tokens")
            self._count("count_tokens")
            return json_answer({"input_tokens": rng.randint(5, 5000)})
        body = request.json()
        stream = body.get("stream") is True
        scenario = str((body.get("metadata") or {}).get("user_id", ""))
        model = body["model"]
        if roll < self.fail_rate:
            return self._fail(fate, stream, may_cut=scenario != "soak-disconnect", path="messages",
                              model=model, rng=rng)
        usage = random_usage(rng, int(body.get("max_tokens") or 1))
        if not stream:
            self._count("message")
            return json_answer(anthropic_message(text=" ".join(words(rng, 3, 30)), model=model, usage=usage))
        start = {**{f: usage[f] for f in TOKEN_FIELDS if f != "output_tokens"}, "output_tokens": 1}
        delta = usage_delta(rng, usage)
        if scenario == "soak-disconnect":
            self._count("slow_stream")
            chunks = [w + " " for w in words(rng, DISCONNECT_CHUNKS, DISCONNECT_CHUNKS)]
            return sse_answer(anthropic_stream_events(chunks, model, start, delta), delay=DISCONNECT_DELAY)
        self._count("stream")
        chunks = [w + " " for w in words(rng, 2, 12)]
        return sse_answer(anthropic_stream_events(chunks, model, start, delta),
                          delay=rng.choice((0.0, 0.0, 0.002, 0.01)))

    def _fail(self, fate: float, stream: bool, may_cut: bool, path: str, model: str = "",
              rng: random.Random | None = None):
        if fate < 0.4:
            self._count(f"{path}:500")
            return error_answer(500, "api_error", "Internal server error")
        if fate < 0.7:
            self._count(f"{path}:529")
            return error_answer(529, "overloaded_error", "Overloaded")
        if fate < 0.9 or not (stream and may_cut):
            self._count(f"{path}:drop")
            return DropAnswer(reset=fate >= 0.8)
        self._count(f"{path}:cut_mid_stream")  # after the first byte: no failover any more
        usage = random_usage(rng, 100)
        start = {**{f: usage[f] for f in TOKEN_FIELDS if f != "output_tokens"}, "output_tokens": 1}
        events = anthropic_stream_events([w + " " for w in words(rng, 4, 8)], model, start)[:5]
        return sse_then_drop(events)

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


WORDS = ("relay", "budget", "stream", "token", "cache", "worker", "socket", "ledger", "quota", "claude")


def words(rng: random.Random, lo: int, hi: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]


def random_usage(rng: random.Random, max_tokens: int) -> dict:
    return {
        "input_tokens": rng.randint(5, 4000),
        "output_tokens": rng.randint(1, max(1, min(max_tokens, 800))),
        "cache_read_input_tokens": rng.randint(100, 60_000) if rng.random() < 0.5 else 0,
        "cache_creation_input_tokens": rng.randint(50, 8_000) if rng.random() < 0.3 else 0,
    }


def usage_delta(rng: random.Random, usage: dict) -> dict:
    """The closing message_delta usage, in the shapes upstreams send: output only; every count
    repeated (cumulative); output plus explicit nulls (which must not erase the start's counts)."""
    shape = rng.random()
    if shape < 0.5:
        return {"output_tokens": usage["output_tokens"]}
    if shape < 0.8:
        return dict(usage)
    return {"output_tokens": usage["output_tokens"], "cache_read_input_tokens": None,
            "cache_creation_input_tokens": None, "input_tokens": None}
