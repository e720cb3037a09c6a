#!/usr/bin/env python
"""A bounded soak of octorelay on loopback: real gunicorn workers, PostgreSQL (or SQLite) and Redis,
a scripted upstream with one flaky and one healthy channel, and a closed-loop load of mixed
streaming / non-streaming clients, some of which hang up mid-stream.

    python bench/soak.py --seconds 300 --workers 2 --concurrency 16

Afterwards it proves, from the database and the admin API, that nothing was lost:

* every request that reached routing has exactly one log row (and no other request has one);
* per key, the sum of the rows' cost_nanos and tokens equals the key's charged totals, exactly;
* each row's tokens are the usage the client saw, and its cost is tokens x the upstream model's price;
* each stream the client hung up on has a `client_disconnected` row; each stream the upstream broke
  has a row with an error type;
* no concurrency slot or budget reservation is left in Redis, no stream is left in flight;
* the workers did not restart, their memory stayed flat and they leak no file descriptors.

Thresholds (per worker, from a quiet moment after the warm-up to a quiet moment at the end, so
in-flight requests and keep-alive connections are the same in both samples):

* RSS growth <= --max-rss-growth-mb (default 20 MB). A worker's RSS settles during the warm-up
  (thread pool, connection pools, caches); after it, the 5-minute soak moves it by 1-2 MB, while a
  worker serves ~20k requests in the measured 4 minutes: a leak of ~1 KB per request (or 50 KB
  per hang-up) crosses the line. (Checked: 50 KB leaked per request fails a 20 s run by +35 MB.)
* open fds growth <= --max-fd-growth (default 10). Pooled connections (DB, Redis, upstream) are
  bounded by the worker's threads and warmed up; the soak moves the count by 0-5. A leaked fd per
  hang-up or per failover would add hundreds. (Checked: one leaked per 20 requests gives +35 in 20 s.)

It prints one markdown summary and exits 0 when every invariant holds, 1 when one fails, 2 when the
soak could not be set up. Everything it starts (the upstream, gunicorn) is stopped in a finally
block, by PID. Defaults: DATABASE_URL is postgresql://postgres@127.0.0.1:5432/<--db> (created if
missing; its schema is reset, the database belongs to the soak) and REDIS_URL is
redis://127.0.0.1:6379/<--redis-db>; --database-url / --redis-url (or the DATABASE_URL / REDIS_URL
environment variables) point elsewhere: such a database is used as it is (it must have no enabled
channels) and such a Redis database is FLUSHED, like the default one.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from tests.upstream import (DropAnswer, Upstream, anthropic_message, anthropic_stream_events,  # noqa: E402
                            error_answer, json_answer, sse_answer, sse_then_drop)

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
OCTORELAY = str(BIN / "octorelay") if (BIN / "octorelay").exists() else "octorelay"
GUNICORN = str(BIN / "gunicorn") if (BIN / "gunicorn").exists() else "gunicorn"
UPSTREAM_KEY = "sk-ant-api03-soak-upstream-" + "x" * 24

# environment variables that would change what octorelay sees; the servers get ours only
SERVER_VARS = ("DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY", "PORT", "ANTHROPIC_API_KEY", "LOG_LEVEL",
               "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR")

# models: both channels serve sonnet and haiku; opus and the alias only the healthy one; the
# alias is renamed by the healthy channel's model_map (so it is priced as haiku); nobody serves
# NO_CHANNEL_MODEL (404 from routing, which still leaves a row)
SHARED_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5"]
HEALTHY_ONLY = ["claude-opus-4-1"]
MODEL_MAP = {"soak-alias": "claude-haiku-4-5"}
NO_CHANNEL_MODEL = "claude-nochannel-0"
MODEL_WEIGHTS = {"claude-sonnet-4-5": 45, "claude-haiku-4-5": 30, "claude-opus-4-1": 10, "soak-alias": 15}

# request kinds a client picks from (weights): ~11% of streams hang up mid-stream
KIND_WEIGHTS = {"message": 45, "stream": 40, "disconnect": 5, "no_channel": 5, "count_tokens": 3,
                "invalid": 2}
ROUTED_KINDS = ("message", "stream", "disconnect", "no_channel")
ALLOWED_STATUS = {"message": {200, 402, 429}, "stream": {200, 402, 429}, "disconnect": {200, 402, 429},
                  "no_channel": {404, 402, 429}, "count_tokens": {200, 402, 429}, "invalid": {400, 402, 429}}
# count_tokens: limited per key (OCTORELAY_COUNT_TOKENS_RPM) and refused once the budget is used up;
# a key's limits are checked before its body is read, so an invalid body may meet them first

# keys: (name, limits, weight)
KEYS = [
    ("plain-a", {}, 30),
    ("plain-b", {}, 25),
    ("rpm", {"rpm": 60}, 10),
    ("tpm", {"tpm": 400_000}, 10),
    ("concurrency", {"max_concurrency": 2}, 10),
    ("budget", {"budget_usd": 0.5}, 10),
    ("quota", {"token_quota": 1_000_000}, 5),
]

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
DISCONNECT_CHUNKS, DISCONNECT_DELAY = 60, 0.05  # a slow stream, so the client leaves while it runs
REQUEST_TIMEOUT = (5.0, 60.0)  # connect, read (per chunk)
STREAM_DEADLINE_S = 60.0  # one stream, start to end
SETTLE_TIMEOUT_S = 30.0  # waiting for the last rows (streams settle after their last byte)
SETTLE_STABLE_S = 5.0  # ... unless their count has not moved for this long
QUIET_S = 1.5  # after the load pauses: keep-alive sockets close, threads go idle


class SetupError(Exception):
    """The soak could not be set up (not an invariant failure)."""


# --------------------------------------------------------------------------- the upstream


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


# --------------------------------------------------------------------------- the clients


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


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn in its own session; stdout/stderr to files; stopped by PID."""

    def __init__(self, args: list[str], env: dict, logdir: Path, name: str):
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def worker_pids(self) -> list[int]:
        pids: set[int] = set()
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                pids.update(int(p) for p in (task / "children").read_text().split())
            except OSError:
                pass
        return sorted(pids)

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # workers that outlived the master (they should not): its process group, by its id
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class ProcSample:
    rss_kb: int
    fds: int
    fd_kinds: dict


def tcp_sockets(pid: int) -> dict[str, tuple[int, int, str]]:
    """socket inode -> (local port, remote port, state) for the TCP sockets `pid` can see."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9:
                out[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16),
                                TCP_STATES.get(cols[3], cols[3]))
    return out


TCP_STATES = {"01": "established", "06": "time_wait", "08": "close_wait", "0A": "listen"}


def sample_process(pid: int, peers: dict[int, str] | None = None) -> ProcSample | None:
    """VmRSS and open fds of `pid`; fds by kind, TCP sockets by the peer they lead to (`peers`:
    remote port -> name; a socket on the server's own port is a client connection)."""
    try:
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        kinds: Counter = Counter()
        fd_dir = Path(f"/proc/{pid}/fd")
        tcp = None
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            kind = target.split(":", 1)[0] if ":" in target else "file"
            if kind == "socket" and peers is not None:
                tcp = tcp_sockets(pid) if tcp is None else tcp
                found = tcp.get(target[8:-1])
                if found is None:
                    kind = "socket/unix"
                else:
                    local, remote, state = found
                    name = "listen" if state == "listen" else peers.get(remote) or (
                        "client" if local in peers.get("server_ports", ()) else f"port {remote}")
                    kind = f"tcp/{name}" + ("" if state in ("established", "listen") else f" ({state})")
            kinds[kind] += 1
        return ProcSample(rss, sum(kinds.values()), dict(kinds))
    except OSError:
        return None


# --------------------------------------------------------------------------- the soak


@dataclass
class Report:
    ok: bool
    summary: str
    stats: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.outcomes: list[Outcome] = []
        self.outcomes_lock = threading.Lock()
        self.key_secrets: dict[str, str] = {}
        self.key_ids: dict[str, int] = {}
        self.base_url = ""
        self.admin_token = secrets.token_urlsafe(24)
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.samples: dict[str, dict[int, ProcSample]] = {}
        self.rss_trend: list[tuple[float, dict[int, int]]] = []
        self.upstreams: list[Upstream] = []
        self.server: Server | None = None
        self.database = None
        self.logdir: Path | None = None
        self.load_seconds = 0.0
        self.client_seconds = 0.0  # time clients were sending (the phases, not the pauses)

    # -- bookkeeping ------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        with self.outcomes_lock:
            self.outcomes.append(outcome)

    def check(self, ok: bool, what: str) -> bool:
        (self.notes if ok else self.failures).append(what)
        return ok

    def routed(self) -> list[Outcome]:
        with self.outcomes_lock:
            return [o for o in self.outcomes if o.kind in ROUTED_KINDS and o.status in (200, 404)]

    # -- setup ----------------------------------------------------------------------------

    def run(self) -> Report:
        args = self.args
        self.logdir = Path(args.logdir) if args.logdir else Path(tempfile.mkdtemp(prefix="octorelay-soak-"))
        self.logdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            database_url, redis_url = self._prepare_stores()
            self._start_upstreams()
            self._start_server(database_url, redis_url)
            self._configure()
            try:
                self._load()
                self._verify(redis_url)
            except _HardStop:
                pass  # already a failure; nothing left to verify against
        finally:
            self._stop_all()
        ok = not self.failures
        summary = self._summary(time.monotonic() - started)
        if ok and not args.keep_logs and not args.logdir:
            shutil.rmtree(self.logdir, ignore_errors=True)
        return Report(ok, summary, self._stats(), list(self.failures))

    def _prepare_stores(self) -> tuple[str, str]:
        from app.db import open_database

        args = self.args
        database_url = args.database_url or os.environ.get("DATABASE_URL")
        owned = database_url is None
        if owned:
            database_url = f"postgresql://postgres@{HOST}:5432/{args.db}"
        if database_url.startswith(("postgres://", "postgresql://")):
            ensure_postgres_database(database_url, reset=owned)
        redis_url = args.redis_url or os.environ.get("REDIS_URL") or f"redis://{HOST}:6379/{args.redis_db}"
        import redis

        try:
            client = redis.Redis.from_url(redis_url, socket_timeout=5)
            client.flushdb()
            client.close()
        except redis.RedisError as exc:
            raise SetupError(f"Redis at {redact(redis_url)} is unavailable: {exc}") from None
        self.database = open_database(database_url, pooled=False)
        env = self._server_env(database_url, redis_url)
        upgraded = subprocess.run([OCTORELAY, "db", "upgrade"], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL)
        if upgraded.returncode != 0:
            raise SetupError(f"octorelay db upgrade failed: {upgraded.stderr.strip()[-2000:]}")
        if not owned:
            enabled = self._sql("SELECT COUNT(*) FROM channel WHERE enabled = %s" % self._true())[0][0]
            if enabled:
                raise SetupError(f"{redact(database_url)} already has {enabled} enabled channel(s), which "
                                 "would take part in routing: use a fresh database")
        self.database_url, self.redis_url = database_url, redis_url
        return database_url, redis_url

    def _true(self) -> str:
        from app.db import is_postgres

        return "TRUE" if is_postgres(self.database) else "1"

    def _server_env(self, database_url: str, redis_url: str) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS and not k.startswith("OCTORELAY_")}
        if not hasattr(self, "secret_key"):
            from cryptography.fernet import Fernet

            self.secret_key = Fernet.generate_key().decode()
        env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, OCTORELAY_SECRET_KEY=self.secret_key,
                   OCTORELAY_ADMIN_TOKEN=self.admin_token, LOG_LEVEL=self.args.log_level,
                   PYTHONUNBUFFERED="1", GUNICORN_CMD_ARGS="--no-control-socket",
                   # a spool of our own: the default one (temp dir, keyed by DATABASE_URL) may hold
                   # settlements another run left for the same URL, which would be replayed here
                   OCTORELAY_SPOOL_DIR=str(self.logdir))
        if self.args.threads:
            env["OCTORELAY_THREADS"] = str(self.args.threads)
        return env

    def _start_upstreams(self) -> None:
        seed = self.args.seed
        self.flaky = ScriptedChannel("flaky", self.args.fail_rate, seed + 1)
        self.healthy = ScriptedChannel("healthy", 0.0, seed + 2)
        for channel in (self.flaky, self.healthy):
            upstream = Upstream(default=channel).start()
            self.upstreams.append(upstream)

    def _start_server(self, database_url: str, redis_url: str) -> None:
        port = free_port()
        env = {**self._server_env(database_url, redis_url), "PORT": str(port),
               "WEB_CONCURRENCY": str(self.args.workers)}
        self.server = Server([GUNICORN, "-c", "gunicorn.conf.py", "--bind", f"{HOST}:{port}"], env,
                             self.logdir, "gunicorn")
        self.base_url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 30
        while True:
            if self.server.popen.poll() is not None:
                raise SetupError(f"gunicorn exited with {self.server.popen.returncode}: "
                                 f"{self.server.stderr_path.read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(self.base_url + "/readyz", timeout=1).status_code == 200 \
                        and len(self.server.worker_pids()) == self.args.workers:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SetupError("gunicorn did not become ready within 30 s")
            time.sleep(0.1)

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        with requests.Session() as session:
            session.trust_env = False
            return session.request(method, self.base_url + path, timeout=30,
                                   headers={"Authorization": f"Bearer {self.admin_token}"}, **kwargs)

    def _configure(self) -> None:
        suffix = secrets.token_hex(3)
        for name, limits, _ in KEYS:
            resp = self.admin("POST", "/admin/keys", json={"name": f"soak-{name}-{suffix}", **limits})
            if resp.status_code != 201:
                raise SetupError(f"creating key {name}: {resp.status_code} {resp.text}")
            self.key_secrets[name], self.key_ids[name] = resp.json()["key"], resp.json()["id"]
        flaky, healthy = self.upstreams
        for name, upstream, models, model_map in (
                ("flaky", flaky, SHARED_MODELS, {}),
                ("healthy", healthy, SHARED_MODELS + HEALTHY_ONLY, MODEL_MAP)):
            resp = self.admin("POST", "/admin/channels", json={
                "name": f"soak-{name}-{suffix}", "type": "anthropic", "base_url": upstream.url,
                "api_key": UPSTREAM_KEY, "models": models, "model_map": model_map, "timeout_s": 30})
            if resp.status_code != 201:
                raise SetupError(f"creating channel {name}: {resp.status_code} {resp.text}")
        self.prices = {p["model"]: {f: int(Decimal(str(p[f])) * 1_000_000) for f in
                                    ("input", "output", "cache_write", "cache_read")}
                       for p in self.admin("GET", "/admin/prices").json()["data"]}
        time.sleep(1.2)  # channel lists are cached per worker for up to 1 s

    # -- load -----------------------------------------------------------------------------

    def _load(self) -> None:
        args = self.args
        warmup = args.warmup if args.warmup is not None else min(60.0, max(3.0, args.seconds / 5))
        warmup = min(warmup, args.seconds / 2)
        load_started = time.monotonic()
        monitor_stop = threading.Event()
        monitor = threading.Thread(target=self._monitor, args=(monitor_stop, load_started + args.seconds + 90),
                                   daemon=True, name="soak-monitor")
        monitor.start()
        try:
            # the hard stop bounds the time clients run: seconds + 30 (the pause between the
            # phases, waiting for rows and sampling, does not count)
            hard_stop = load_started + args.seconds + 30
            self._phase("warm-up", warmup, hard_stop)
            self.workers_at_start = self.server.worker_pids()
            paused = time.monotonic()
            self._quiesce()
            self.samples["start"] = self._sample()
            hard_stop += time.monotonic() - paused
            self._phase("measured", args.seconds - warmup, hard_stop)
            self._quiesce()
            self.samples["end"] = self._sample()
            self.workers_at_end = self.server.worker_pids()
        finally:
            monitor_stop.set()
            monitor.join(5)
            self.load_seconds = time.monotonic() - load_started

    def _phase(self, name: str, seconds: float, hard_stop: float) -> None:
        stop = threading.Event()
        deadline = min(time.monotonic() + seconds, hard_stop)
        base = len(self.outcomes)
        clients = [LoadClient(self, i, self.args.seed * 7919 + base + i) for i in range(self.args.concurrency)]
        max_requests = int(max(seconds, 1) * 2000)  # a bound on each client's loop, far above reach
        threads = [threading.Thread(target=c.run, args=(stop, deadline, max_requests), daemon=True,
                                    name=f"soak-client-{c.index}") for c in clients]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, hard_stop - time.monotonic()))
        stop.set()
        self.client_seconds += time.monotonic() - started
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.failures.append(f"{name} phase: {len(stuck)} client(s) still waiting for the relay at the "
                                 f"hard stop (seconds + 30)")
            raise _HardStop()

    def _quiesce(self) -> None:
        """Wait until every routed request so far has its row, then a moment for sockets to close."""
        self._wait_for_rows()
        time.sleep(QUIET_S)

    def _wait_for_rows(self) -> int:
        """Until the rows of routed requests are all there, or their count stopped growing for
        SETTLE_STABLE_S (rows are missing), or SETTLE_TIMEOUT_S."""
        expected = len(self.routed())
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_count = self._row_count()
            if now_count != count:
                count, last_change = now_count, time.monotonic()
            if count >= expected or time.monotonic() - last_change > SETTLE_STABLE_S:
                break
            time.sleep(0.2)
        return count

    def _sample(self) -> dict[int, ProcSample]:
        out = {}
        peers = {urlsplit(u.url).port: f"upstream-{c.name}" for u, c in
                 zip(self.upstreams, (self.flaky, self.healthy))}
        peers[urlsplit(self.redis_url).port or 6379] = "redis"
        if self.database_url.startswith("postgres"):
            peers[urlsplit(self.database_url).port or 5432] = "postgres"
        peers["server_ports"] = (urlsplit(self.base_url).port,)
        for pid in self.server.worker_pids():
            sample = sample_process(pid, peers)
            if sample is not None:
                out[pid] = sample
        return out

    def _monitor(self, stop: threading.Event, hard_stop: float) -> None:
        """Every 5 s: each worker's RSS (for the trend line); trims the upstreams' request logs."""
        started = time.monotonic()
        while not stop.wait(5.0) and time.monotonic() < hard_stop:
            self.rss_trend.append((time.monotonic() - started, {
                pid: s.rss_kb for pid, s in self._sample().items()}))
            for upstream in self.upstreams:
                del upstream.requests[:-100]  # the recording list would grow without bound

    # -- verification -----------------------------------------------------------------------

    def _sql(self, sql: str) -> list[tuple]:
        with self.database.connection_context():
            return list(self.database.execute_sql(sql).fetchall())

    def _key_filter(self) -> str:
        return "key_id IN (%s)" % ",".join(str(int(i)) for i in self.key_ids.values())

    def _row_count(self) -> int:
        return self._sql(f"SELECT COUNT(*) FROM request_log WHERE {self._key_filter()}")[0][0]

    def _verify(self, redis_url: str) -> None:
        with self.outcomes_lock:
            outcomes = list(self.outcomes)
        routed = self.routed()
        final_count = self._wait_for_rows()
        time.sleep(0.5)
        rows = {r[0]: r for r in self._sql(
            "SELECT request_id, key_id, channel_id, model, stream, status, error_type, input_tokens, "
            "output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_nanos, attempts, "
            f"client_disconnected FROM request_log WHERE {self._key_filter()}")}
        self.rows = rows
        self.check(final_count == len(rows), f"rows settled and stable ({len(rows)})")

        # 1. every answer as expected, every routed request has its row and no other one has
        problems = Counter(o.problem for o in outcomes if o.problem)
        self.check(not problems, "every request got a well-formed, expected answer"
                   + (f": {dict(problems.most_common(8))}" if problems else ""))
        routed_ids = {o.request_id for o in routed}
        all_ids = {o.request_id for o in outcomes if o.request_id}
        self.check(None not in routed_ids and len(routed_ids) == len(routed),
                   "every routed answer carries a unique request-id")
        missing = routed_ids - set(rows)
        # refused before routing (400/402/429...): a row too, without a channel or a cost (bounded per key)
        refusals = {rid for rid in set(rows) - routed_ids if rows[rid][2] is None and int(rows[rid][11]) == 0}
        extra = set(rows) - routed_ids - refusals
        self.check(not missing, f"every request that reached routing has its log row "
                   f"({len(routed_ids)} routed, {len(routed_ids & set(rows))} with rows, {len(missing)} missing"
                   + (f", e.g. {sorted(missing)[:3]}" if missing else "") + ")")
        self.check(not (refusals - all_ids), f"refusal rows belong to refused requests ({len(refusals)} rows)")
        self.refusal_rows = len(refusals)
        self.check(not extra, f"no other row ({len(extra)} extra"
                   + (f", of which {len(extra - all_ids)} unknown to the clients" if extra else "") + ")")

        # 2. per key: rows add up to the key's totals, exactly (nanos from the DB)
        sums = defaultdict(lambda: [0, 0, 0])  # key_id -> [rows, cost_nanos, tokens]
        for r in rows.values():
            s = sums[r[1]]
            s[0] += 1
            s[1] += int(r[11])
            s[2] += sum(int(r[i]) for i in (7, 8, 9, 10))
        keys = {r[0]: r for r in self._sql(
            f"SELECT id, used_nanos, used_tokens, budget_nanos, token_quota FROM api_key WHERE "
            f"id IN ({','.join(str(i) for i in self.key_ids.values())})")}
        self.key_rows, self.key_sums = keys, sums
        bad = [name for name, kid in self.key_ids.items()
               if (sums[kid][1], sums[kid][2]) != (int(keys[kid][1]), int(keys[kid][2]))]
        total_rows_nanos = sum(s[1] for s in sums.values())
        total_key_nanos = sum(int(k[1]) for k in keys.values())
        self.check(not bad and total_rows_nanos == total_key_nanos,
                   f"sum of rows' cost_nanos == sum of keys' used_nanos ({total_rows_nanos} == {total_key_nanos}) "
                   f"and tokens likewise, key by key" + (f"; differ for {bad}" if bad else ""))
        usage = self.admin("GET", "/admin/usage", params={"group_by": "key"}).json()["data"]
        api = {u["key_id"]: u for u in usage if u["key_id"] in sums}
        api_requests = sum(u["requests"] for u in api.values())
        api_tokens = sum(u[f] for u in api.values() for f in TOKEN_FIELDS)
        self.check(api_requests == len(rows) and api_tokens == sum(s[2] for s in sums.values()),
                   f"GET /admin/usage agrees: {api_requests} requests, {api_tokens} tokens")
        self.api_used_usd = sum(u["used_usd"] for u in self.admin("GET", "/admin/keys").json()["data"]
                                if u["id"] in sums)

        # 3. each row's usage is what the client saw; its cost is tokens x the upstream model's price
        mismatched, mispriced = [], []
        for o in outcomes:
            row = rows.get(o.request_id)
            if row is not None and o.usage is not None:
                if tuple(int(row[i]) for i in (7, 8, 9, 10)) != tuple(o.usage[f] for f in TOKEN_FIELDS):
                    mismatched.append(o.request_id)
        for r in rows.values():
            price = self.prices.get(MODEL_MAP.get(r[3], r[3])) if r[2] is not None else None
            tokens = [int(r[i]) for i in (7, 8, 9, 10)]
            want = 0 if price is None else (tokens[0] * price["input"] + tokens[1] * price["output"]
                                            + tokens[2] * price["cache_write"] + tokens[3] * price["cache_read"]
                                            + 500) // 1000
            if int(r[11]) != want:
                mispriced.append(r[0])
        compared = sum(1 for o in outcomes if o.usage is not None and o.request_id in rows)
        self.check(not mismatched, f"row tokens == usage the client saw ({compared} compared, "
                   f"{len(mismatched)} differ" + (f", e.g. {mismatched[:3]}" if mismatched else "") + ")")
        self.check(not mispriced, f"row cost == tokens x price of the upstream model ({len(rows)} rows, "
                   f"{len(mispriced)} differ" + (f", e.g. {mispriced[:3]}" if mispriced else "") + ")")

        # 4. disconnects and broken streams are on the record
        gone = [o for o in outcomes if o.disconnected]
        not_flagged = [o.request_id for o in gone if not (rows.get(o.request_id) or [False] * 14)[13]]
        self.check(not not_flagged, f"every client hang-up has a client_disconnected row ({len(gone)} hang-ups, "
                   f"{len(not_flagged)} without" + (f", e.g. {not_flagged[:3]}" if not_flagged else "") + ")")
        flagged = sum(1 for r in rows.values() if r[13])
        self.check(flagged == len(gone), f"client_disconnected rows == hang-ups ({flagged} == {len(gone)})")
        broken = [o for o in outcomes if o.stream_error]
        unmarked = [o.request_id for o in broken if not (rows.get(o.request_id) or [None] * 14)[6]]
        self.check(not unmarked, f"every stream broken upstream has a row with an error type "
                   f"({len(broken)} broken, {len(unmarked)} unmarked)")

        # 5. nothing left in flight: concurrency slots, budget reservations, the streams gauge
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            leftovers = {}
            for kind in ("inflight", "budget", "quota"):
                for name in client.scan_iter(match=f"octorelay:{kind}:*", count=500):
                    name = name.decode()
                    if not name.endswith(":w") and client.zcard(name):
                        leftovers[name] = client.zcard(name)
        finally:
            client.close()
        self.check(not leftovers, "no concurrency slot or budget reservation left in Redis"
                   + (f": {leftovers}" if leftovers else ""))
        metrics = requests.get(self.base_url + "/metrics", timeout=10).text
        in_flight = [line for line in metrics.splitlines() if line.startswith("octorelay_streams_in_flight")]
        value = float(in_flight[0].split()[-1]) if in_flight else 0.0
        self.check(value == 0, f"octorelay_streams_in_flight is {value:g} after the load")

        # 6. the workers: same processes, flat memory, no fd leak
        self.check(self.workers_at_start == self.workers_at_end and len(self.workers_at_end) == self.args.workers,
                   f"no worker restarted (pids {self.workers_at_start} -> {self.workers_at_end})")
        start, end = self.samples.get("start", {}), self.samples.get("end", {})
        for pid in sorted(set(start) & set(end)):
            growth_mb = (end[pid].rss_kb - start[pid].rss_kb) / 1024
            fd_growth = end[pid].fds - start[pid].fds
            self.check(growth_mb <= self.args.max_rss_growth_mb,
                       f"worker {pid}: RSS {start[pid].rss_kb / 1024:.1f} -> {end[pid].rss_kb / 1024:.1f} MB "
                       f"({growth_mb:+.1f} MB, limit +{self.args.max_rss_growth_mb:g})")
            self.check(fd_growth <= self.args.max_fd_growth,
                       f"worker {pid}: fds {start[pid].fds} -> {end[pid].fds} ({fd_growth:+d}, "
                       f"limit +{self.args.max_fd_growth})")

        # 7. the logs: no lost accounting, no crash
        log_text = self.server.stderr_path.read_text(errors="replace")
        bad_lines = Counter()
        for line in log_text.splitlines():
            if "failed to record request" in line or "settlement spooled" in line:
                bad_lines["settlement not written at once"] += 1
            elif "unhandled error" in line:
                bad_lines["unhandled error"] += 1
            elif "WORKER TIMEOUT" in line or "Worker exiting" in line or "was sent SIGKILL" in line:
                bad_lines["worker died"] += 1
            elif "Traceback" in line:
                bad_lines["traceback"] += 1
        self.check(not bad_lines, "server log has no lost record, unhandled error or worker death"
                   + (f": {dict(bad_lines)}" if bad_lines else ""))
        secrets_used = {"admin token": self.admin_token, "upstream key": UPSTREAM_KEY,
                        "secret key": self.secret_key, **{f"key {n}": k for n, k in self.key_secrets.items()}}
        leaked = [name for name, value in secrets_used.items()
                  if value in log_text or value in self.server.stdout_path.read_text(errors="replace")]
        self.check(not leaked, "no secret in the server's output" + (f": {leaked} leaked" if leaked else ""))
        upstream_errors = sum(len(u.errors) for u in self.upstreams)
        self.check(upstream_errors == 0, f"scripted upstream raised {upstream_errors} unexpected errors")
        self.check(len(outcomes) > 0 and sum(1 for o in outcomes if o.status == 200) > 0,
                   "the load ran")

    # -- teardown and reporting -------------------------------------------------------------

    def _stop_all(self) -> None:
        if self.server is not None:
            self.server.stop()
        for upstream in self.upstreams:
            upstream.close()
        if self.database is not None:
            self.database.close()

    def _stats(self) -> dict:
        outcomes = self.outcomes
        return {
            "requests": len(outcomes),
            "routed": len(self.routed()),
            "rows": len(getattr(self, "rows", {})),
            "refusal_rows": getattr(self, "refusal_rows", 0),
            "by_status": dict(Counter(str(o.status) for o in outcomes)),
            "disconnects": sum(1 for o in outcomes if o.disconnected),
            "stream_errors": sum(1 for o in outcomes if o.stream_error),
            "failures": list(self.failures),
            "samples": {phase: {pid: {"rss_kb": s.rss_kb, "fds": s.fds} for pid, s in sample.items()}
                        for phase, sample in self.samples.items()},
            "load_seconds": round(self.load_seconds, 1),
            "client_seconds": round(self.client_seconds, 1),
        }

    def _summary(self, wall: float) -> str:
        args, outcomes = self.args, self.outcomes
        db = "PostgreSQL" if getattr(self, "database_url", "").startswith("postgres") else "SQLite"
        out = [f"## octorelay soak: {args.seconds:g} s load ({self.client_seconds:.0f} s of clients, "
               f"{wall:.0f} s wall), {args.workers} workers, {args.concurrency} clients, {db} + Redis",
               "", f"**{'PASS' if not self.failures else 'FAIL'}** — {len(outcomes)} requests "
               f"({len(outcomes) / max(self.client_seconds, 1e-9):.0f}/s)", ""]
        out += ["### Requests by outcome", "", "| kind | sent | 200 | 404 | 429 | 402 | 400 | hung up | "
                "stream error | problem |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for kind in KIND_WEIGHTS:
            mine = [o for o in outcomes if o.kind == kind]
            status = Counter(o.status for o in mine)
            out.append(f"| {kind} | {len(mine)} | {status[200]} | {status[404]} | {status[429]} | {status[402]} | "
                       f"{status[400]} | {sum(o.disconnected for o in mine)} | {sum(o.stream_error for o in mine)} "
                       f"| {sum(1 for o in mine if o.problem)} |")
        status = Counter(o.status for o in outcomes)
        durations = sorted(o.seconds for o in outcomes if o.kind != "disconnect")
        if durations:
            def q(p):
                return durations[min(len(durations) - 1, int(p * len(durations)))]
            latency = (f"client-side duration (hang-ups excluded): p50 {q(0.5) * 1000:.0f} ms, "
                       f"p99 {q(0.99) * 1000:.0f} ms, max {durations[-1] * 1000:.0f} ms")
        else:
            latency = ""
        out.append(f"| **all** | {len(outcomes)} | {status[200]} | {status[404]} | {status[429]} | {status[402]} | "
                   f"{status[400]} | {sum(o.disconnected for o in outcomes)} | "
                   f"{sum(o.stream_error for o in outcomes)} | {sum(1 for o in outcomes if o.problem)} |")
        out += ["", latency]
        rows = getattr(self, "rows", {})
        if rows:
            attempts = Counter(int(r[12]) for r in rows.values())
            out += ["", "### Accounting", "",
                    f"- routed requests: {len(self.routed())}; log rows: {len(rows)} "
                    f"(attempts per row: {dict(sorted(attempts.items()))}; client_disconnected: "
                    f"{sum(1 for r in rows.values() if r[13])}; with error_type: "
                    f"{sum(1 for r in rows.values() if r[6])})",
                    f"- tokens in rows: " + ", ".join(f"{f} {sum(int(r[i]) for r in rows.values()):,}"
                                                      for i, f in zip((7, 8, 9, 10), TOKEN_FIELDS)),
                    f"- cost: rows {sum(int(r[11]) for r in rows.values()):,} nanos = keys' used "
                    f"{sum(int(k[1]) for k in self.key_rows.values()):,} nanos (${self.api_used_usd:.6f} via "
                    f"the admin API)",
                    f"- upstream flaky: {dict(sorted(self.flaky.counts.items()))}",
                    f"- upstream healthy: {dict(sorted(self.healthy.counts.items()))}",
                    "", "| key | limits | sent | 200 | 429 | 402 | rows | row nanos | used nanos | row tokens "
                    "| used tokens |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for name, limits, _ in KEYS:
                kid = self.key_ids[name]
                mine = Counter(o.status for o in outcomes if o.key == name and o.kind in ROUTED_KINDS)
                s, k = self.key_sums[kid], self.key_rows[kid]
                lim = ", ".join(f"{a}={b}" for a, b in limits.items()) or "-"
                out.append(f"| {name} | {lim} | {sum(mine.values())} | {mine[200]} | {mine[429]} | {mine[402]} | "
                           f"{s[0]} | {s[1]:,} | {int(k[1]):,} | {s[2]:,} | {int(k[2]):,} |")
        start, end = self.samples.get("start", {}), self.samples.get("end", {})
        if start:
            out += ["", "### Workers (quiet moments: after the warm-up, after the load)", "",
                    "| pid | RSS start MB | RSS end MB | Δ MB | RSS min–max during load MB | fds start | "
                    "fds end | Δ fds | fds by kind (start→end) |", "|---|---:|---:|---:|---|---:|---:|---:|---|"]
            for pid in sorted(start):
                a, b = start[pid], end.get(pid)
                trend = [t[1][pid] for t in self.rss_trend if pid in t[1]]
                span = f"{min(trend) / 1024:.1f}–{max(trend) / 1024:.1f}" if trend else "-"
                if b is None:
                    out.append(f"| {pid} | {a.rss_kb / 1024:.1f} | gone | | {span} | {a.fds} | gone | | |")
                    continue
                out.append(f"| {pid} | {a.rss_kb / 1024:.1f} | {b.rss_kb / 1024:.1f} | "
                           f"{(b.rss_kb - a.rss_kb) / 1024:+.1f} | {span} | {a.fds} | {b.fds} | {b.fds - a.fds:+d} | "
                           f"{fd_kinds_change(a.fd_kinds, b.fd_kinds)} |")
        out += ["", "### Invariants", ""]
        out += [f"- ❌ {f}" for f in self.failures]
        out += [f"- ✅ {n}" for n in self.notes]
        if self.failures and self.logdir is not None:
            out += ["", f"Server logs kept in {self.logdir}"]
        return "\n".join(out)


def fd_kinds_change(start: dict, end: dict) -> str:
    parts = []
    for kind in sorted(set(start) | set(end)):
        a, b = start.get(kind, 0), end.get(kind, 0)
        parts.append(f"{kind} {a}" if a == b else f"{kind} {a}→{b}")
    return ", ".join(parts)


class _HardStop(Exception):
    """The load did not stop by seconds + 30: verification is skipped, everything is stopped."""


# --------------------------------------------------------------------------- databases


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def ensure_postgres_database(url: str, reset: bool) -> None:
    """Create the database when missing; with `reset`, empty its public schema (the soak's own)."""
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SetupError("DATABASE_URL names no database")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    try:
        conn = psycopg2.connect(admin_url, connect_timeout=5)
    except psycopg2.Error as exc:
        raise SetupError(f"PostgreSQL at {redact(admin_url)} is unavailable: {exc}".strip()) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return
    finally:
        conn.close()
    if reset:
        conn = psycopg2.connect(url, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("DROP SCHEMA public CASCADE")
                cur.execute("CREATE SCHEMA public")
        finally:
            conn.close()


# --------------------------------------------------------------------------- entry points


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="load duration, warm-up included (300)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before the first memory/fd sample (default: seconds/5, 3..60)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, WEB_CONCURRENCY (2)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent closed-loop clients (16)")
    parser.add_argument("--threads", type=int, default=None, help="OCTORELAY_THREADS (app default)")
    parser.add_argument("--database-url", default=None,
                        help="default: $DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/<--db>")
    parser.add_argument("--db", default="soak", help="database name for the default URL (soak); it is reset")
    parser.add_argument("--redis-url", default=None,
                        help="default: $REDIS_URL, else redis://127.0.0.1:6379/<--redis-db>; FLUSHED first")
    parser.add_argument("--redis-db", type=int, default=9, help="Redis db for the default URL (9)")
    parser.add_argument("--fail-rate", type=float, default=0.10, help="the flaky channel's failure rate (0.10)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=20.0,
                        help="allowed RSS growth per worker after the warm-up, MB (20)")
    parser.add_argument("--max-fd-growth", type=int, default=10,
                        help="allowed open-fd growth per worker after the warm-up (10)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the load and the upstream (1)")
    parser.add_argument("--log-level", default="info", help="the server's LOG_LEVEL (info)")
    parser.add_argument("--logdir", default=None, help="keep the server's logs here (default: a temp dir, "
                                                       "removed when the soak passes)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp log dir even on success")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.workers < 1 or args.concurrency < 1:
        parser.error("--seconds, --workers and --concurrency must be positive")
    if args.redis_db < 0 or args.max_fd_growth < 0 or args.max_rss_growth_mb < 0:
        parser.error("--redis-db, --max-fd-growth and --max-rss-growth-mb must not be negative")
    return args


def run(argv=None) -> Report:
    """Run the soak; returns the report (never raises for an invariant; SetupError for setup)."""
    return Soak(parse_args(argv)).run()


def main(argv=None) -> int:
    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
    try:
        report = run(argv)
    except SetupError as exc:
        print(f"soak: setup failed: {exc}", file=sys.stderr)
        return 2
    print(report.summary)
    if "--json" in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps(report.stats, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
