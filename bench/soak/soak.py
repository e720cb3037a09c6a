"""One soak: set up the stores, the upstreams and gunicorn, run the load in phases with samples
between them, verify, report, and stop everything it started."""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import requests

from bench.soak.clients import LoadClient, Outcome
from bench.soak.databases import ensure_postgres_database, redact
from bench.soak.processes import ProcSample, Server, sample_process
from bench.soak.report import Report, Reporting
from bench.soak.settings import (GUNICORN, HEALTHY_ONLY, HOST, KEYS, MODEL_MAP, OCTORELAY, QUIET_S, REPO,
                                 ROUTED_KINDS, SERVER_VARS, SETTLE_STABLE_S, SETTLE_TIMEOUT_S, SHARED_MODELS,
                                 UPSTREAM_KEY, SetupError)
from bench.soak.upstream import ScriptedChannel
from bench.soak.verify import Verification
from tests.support.net import free_port
from tests.support.upstream import Upstream


class Soak(Verification, Reporting):
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

    def _stop_all(self) -> None:
        if self.server is not None:
            self.server.stop()
        for upstream in self.upstreams:
            upstream.close()
        if self.database is not None:
            self.database.close()


class _HardStop(Exception):
    """The load did not stop by seconds + 30: verification is skipped, everything is stopped."""
