"""The gunicorn under test, and samples of its workers' memory, file descriptors and sockets from /proc."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.soak.settings import REPO
from tests.support.processes import Proc


class Server(Proc):
    """gunicorn in its own session, run from the repository; stopped by PID (the tests' `Proc`)."""

    def __init__(self, args: list[str], env: dict, logdir: Path, name: str):
        super().__init__(args, cwd=REPO, env=env, logdir=logdir, name=name)

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

    def stop(self, timeout: float = 20.0) -> int | None:
        return super().stop(timeout=timeout)


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
