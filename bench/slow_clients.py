"""Slow clients (slowloris) against one gevent worker: how long do idle or trickling
connections hold its connection slots, and does a normal request still get served?

    python bench/slow_clients.py [--slots 1000] [--counts 500,1000,1200] [--probe-timeout 100]

Starts gunicorn as deployed (one gevent worker, OCTORELAY_THREADS slots, SQLite in a temp
folder, a `mock` channel), then for each kind of slow client and each count N: opens N such
connections on loopback, waits until the worker has taken them in, and times one normal
`POST /v1/messages` on a fresh connection (capped at --probe-timeout). The kinds:
  idle    connect and send nothing
  header  send a request line, then one header byte every --trickle seconds
  body    send complete headers with a valid key and Content-Length, then one body byte
          every --trickle seconds
Bounded: at most max(counts) connections per phase, each phase at most --probe-timeout + 30 s.
Prints one table row per phase; SECURITY.md has the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ADMIN = "bench-admin-token-" + "x" * 32
BODY = json.dumps({"model": "claude-bench", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(slots: int, workdir: Path, extra_env: dict) -> tuple[subprocess.Popen, int, str]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": HOST, "WEB_CONCURRENCY": "1",
           "DATABASE_URL": f"sqlite:///{workdir}/bench.db", "OCTORELAY_ADMIN_TOKEN": ADMIN,
           "OCTORELAY_THREADS": str(slots), "LOG_LEVEL": "warning", **extra_env}
    env.pop("REDIS_URL", None)
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / "octorelay"), "db", "upgrade"], env=env, cwd=workdir, check=True,
                   capture_output=True)
    proc = subprocess.Popen([str(bindir / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py")], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(workdir / "gunicorn.log", "wb"),
                            start_new_session=True)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("gunicorn did not start; see " + str(workdir / "gunicorn.log"))
        time.sleep(0.1)
    base = f"http://{HOST}:{port}"
    requests.post(f"{base}/admin/channels", headers=admin, timeout=10,
                  json={"name": "mock", "type": "mock", "models": ["claude-*"]}).raise_for_status()
    key = requests.post(f"{base}/admin/keys", headers=admin, json={"name": "bench"}, timeout=10).json()["key"]
    return proc, port, key


def opening(kind: str, key: str) -> bytes:
    if kind == "idle":
        return b""
    if kind == "header":
        return b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
    return (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + key.encode()
            + b"\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(BODY) + BODY[:1])


class Attack:
    """N slow connections, each trickling one byte per `trickle` seconds from one thread."""

    def __init__(self, port: int, kind: str, count: int, key: str, trickle: float):
        self.socks: list[socket.socket] = []
        self.closed_at: list[float] = []
        self.kind, self.trickle, self.stop = kind, trickle, threading.Event()
        first = opening(kind, key)
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.setblocking(False)
            if first:
                sock.send(first)
            self.socks.append(sock)
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        alive = set(self.socks)
        while alive and not self.stop.wait(self.trickle if self.kind != "idle" else 0.5):
            for sock in list(alive):
                try:
                    if self.kind != "idle":
                        sock.send(b"X" if self.kind == "header" else b"\x20")
                    if sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    alive.discard(sock)
                    self.closed_at.append(time.monotonic() - self.started)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


def probe(port: int, key: str, timeout: float) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        resp = requests.post(f"http://{HOST}:{port}/v1/messages", data=BODY, timeout=timeout,
                             headers={"x-api-key": key, "anthropic-version": "2023-06-01",
                                      "content-type": "application/json", "Connection": "close"})
        return resp.status_code, time.monotonic() - started
    except requests.RequestException:
        return None, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=1000)
    parser.add_argument("--counts", default="500,1000,1200")
    parser.add_argument("--kinds", default="idle,header,body")
    parser.add_argument("--trickle", type=float, default=10.0)
    parser.add_argument("--probe-timeout", type=float, default=100.0)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="octorelay-slow-") as tmp:
        proc, port, key = start(args.slots, Path(tmp), {})
        try:
            print(f"one gevent worker, {args.slots} slots; a slow client sends a byte every {args.trickle:g} s")
            print(f"{'kind':<7} {'N':>5}  {'normal request':<28} {'slow connections closed by the server'}")
            for kind in args.kinds.split(","):
                for count in counts:
                    attack = Attack(port, kind, count, key, args.trickle)
                    time.sleep(1.0)  # let the worker accept what it will
                    status, took = probe(port, key, args.probe_timeout)
                    held = time.monotonic() - attack.started
                    closed = sorted(attack.closed_at)
                    attack.close()
                    answer = f"{status} after {took:.1f} s" if status else f"no answer in {took:.0f} s"
                    gone = (f"{len(closed)}/{count} within {held:.0f} s (first {closed[0]:.0f} s, "
                            f"last {closed[-1]:.0f} s)" if closed else f"0/{count} within {held:.0f} s")
                    print(f"{kind:<7} {count:>5}  {answer:<28} {gone}", flush=True)
                    time.sleep(2.0)  # the worker lets go of the closed sockets
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=40)


if __name__ == "__main__":
    main()
