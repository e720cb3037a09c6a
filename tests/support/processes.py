"""octorelay as real processes: `procs` (a fixture that stops whatever it started), base_env,
serve_gunicorn() and the waits around them.

Every process is started in its own session, every wait has a deadline, and every process is
stopped (SIGTERM, then SIGKILL to its group) in teardown.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.admin import AdminClient
from tests.support.cli_harness import OUTSIDE_VARS
from tests.support.net import free_port, url

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OCTORELAY = str(BIN / "octorelay") if (BIN / "octorelay").exists() else "octorelay"
GUNICORN = str(BIN / "gunicorn") if (BIN / "gunicorn").exists() else "gunicorn"
START_TIMEOUT = 20.0


def base_env(**extra: str) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in OUTSIDE_VARS}
    out["PYTHONUNBUFFERED"] = "1"
    # several test servers must not fight over gunicorn's per-user control socket
    out["GUNICORN_CMD_ARGS"] = "--no-control-socket"
    out.update(extra)
    return out


class Proc:
    """A started process whose stdout and stderr go to files; stopped by `stop()`."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict, logdir: Path, name: str):
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"process did not exit within {timeout}s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (gunicorn shuts down gracefully); SIGKILL the group if it hangs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        return self.popen.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def _reap_group(self) -> None:
        """Workers that outlived their master (they should not) are killed too."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def procs(tmp_path):
    """Start processes through this; all are stopped at teardown, whatever happened."""
    started: list[Proc] = []
    logdir = tmp_path / "logs"
    logdir.mkdir()

    def start(args, *, cwd, env, name=None) -> Proc:
        proc = Proc(args, cwd=cwd, env=env, logdir=logdir, name=name or f"p{len(started)}")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=10)
        # shown by pytest only when the test failed
        print(f"--- {proc.stdout_path.name}:\n{proc.stdout[-5000:]}\n--- {proc.stderr_path.name}:\n"
              f"{proc.stderr[-20000:]}")


def get(port: int, path: str, timeout: float = 5.0, **headers) -> requests.Response:
    """One request on a fresh connection (so that several workers get their share)."""
    with requests.Session() as session:
        return session.get(url(port, path), headers={"Connection": "close", **headers}, timeout=timeout)


def wait_until_serving(proc: Proc, port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            pytest.fail(f"server exited with {proc.popen.returncode}\nstdout:\n{proc.stdout}\n"
                        f"stderr:\n{proc.stderr}")
        try:
            if get(port, "/healthz", timeout=1.0).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    pytest.fail(f"server not serving within {timeout}s\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


def run(args, *, cwd, env, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def migrate(env: dict) -> None:
    """`octorelay db upgrade` with the test's environment."""
    done = run([OCTORELAY, "db", "upgrade"], cwd=REPO, env=base_env(**env))
    assert done.returncode == 0, done.stderr


@dataclass
class Served:
    """A gunicorn serving on 127.0.0.1:port (or still starting, with wait=False)."""
    proc: Proc
    port: int
    env: dict  # what it runs with (base_env plus the settings), for CLI calls against the same database

    @property
    def admin(self) -> AdminClient:
        return AdminClient(self.port)

    def url(self, path: str) -> str:
        return url(self.port, path)

    def wait(self) -> Served:
        wait_until_serving(self.proc, self.port)
        return self


def serve_gunicorn(procs, env: dict, *, workers: int | None = None, threads: int | None = None,
                   worker_class: str | None = None, port: int | None = None, bind_loopback: bool = False,
                   upgrade: bool = True, wait: bool = True, name: str = "gunicorn", **settings: str) -> Served:
    """`gunicorn -c gunicorn.conf.py` from the repository, as deployed, on a free port.

    env: the test's environment (the `env` fixture, maybe with REDIS_URL); workers, threads and
    worker_class set WEB_CONCURRENCY, OCTORELAY_THREADS and OCTORELAY_WORKER_CLASS when given (else
    the deployed defaults); settings: any other variable (OCTORELAY_MAX_BODY_MB="0.05", ...).
    bind_loopback passes `--bind 127.0.0.1:port` on gunicorn's command line; upgrade runs
    `octorelay db upgrade` first; wait=False returns at once (call `.wait()`), to start several."""
    port = port or free_port()
    chosen = {"PORT": str(port)}
    if workers is not None:
        chosen["WEB_CONCURRENCY"] = str(workers)
    if threads is not None:
        chosen["OCTORELAY_THREADS"] = str(threads)
    if worker_class is not None:
        chosen["OCTORELAY_WORKER_CLASS"] = worker_class
    server_env = base_env(**{**env, **chosen, **settings})
    if bind_loopback:
        server_env["GUNICORN_CMD_ARGS"] = f"--no-control-socket --bind 127.0.0.1:{port}"
    if upgrade:
        done = run([OCTORELAY, "db", "upgrade"], cwd=REPO, env=server_env)
        assert done.returncode == 0, done.stderr
    served = Served(procs([GUNICORN, "-c", "gunicorn.conf.py"], cwd=REPO, env=server_env, name=name), port,
                    server_env)
    return served.wait() if wait else served


def worker_pids(master: int) -> list[int]:
    """The children of a gunicorn master, read from /proc, in pid order."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # field 4 of stat: the parent pid
            pids.append(int(entry))
    return sorted(pids)


def wait_for_workers(proc: Proc, timeout: float = 10.0) -> list[int]:
    """The master's worker pids, once it has any (empty past `timeout`)."""
    deadline = time.monotonic() + timeout
    while not (workers := worker_pids(proc.popen.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return workers


KEY_LINE = re.compile(r"^\s+(sk-octo-[A-Za-z0-9_\-]+)\s*$", re.M)


def wait_for_key_line(proc: Proc, timeout: float = START_TIMEOUT) -> str:
    """The API key `octorelay up` prints once, on its first start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = KEY_LINE.search(proc.stdout)
        if match:
            return match.group(1)
        if proc.popen.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"no key line on stdout within {timeout}s\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
