"""Settlements the database refused, kept in a local file until it takes them again."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from datetime import datetime

from peewee import DataError, IntegrityError

from ..config import ConfigError
from ..wire.usage import USAGE_FIELDS

log = logging.getLogger("octorelay.accounting")


class Spool:
    """Settlements the database refused, one JSON line each, until it takes them again.

    A local file (appends are serialised with flock across workers): it covers
    a database that is away for a moment; it is not a second database. It is
    opened without following links, in a folder only this user can enter, and
    every row read back is checked before it is written (a forged row must
    not refund a key).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()

    def _open(self, flags: int):
        fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "r+" if flags & os.O_RDWR else "a", encoding="utf-8")

    def add(self, row: dict) -> None:
        with self._lock, self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")

    def pending(self) -> bool:
        try:
            return os.path.getsize(self.path) > 0
        except OSError:
            return False

    def drain(self, write) -> int:
        """Hand every spooled row to `write`; rows it still refuses stay spooled. Returns rows written."""
        if not self._lock.acquire(blocking=False):
            return 0  # another thread of this worker is draining
        try:
            with self._open(os.O_RDWR) as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                rows = [_parse_row(line) for line in fh if line.strip()]
                left: list[dict | str] = []  # a str: the reason a line is no row (_parse_row)
                done = 0
                for row in rows:
                    if left:
                        left.append(row)
                        continue
                    try:
                        if isinstance(row, str):
                            raise DataError(row)
                        write(row)
                        done += 1
                    except (IntegrityError, DataError) as exc:  # never storable: set aside, keep going
                        log.error("spooled settlement refused", extra={"fields": {
                            "request_id": row.get("request_id") if isinstance(row, dict) else None,
                            "reason": str(exc)[:200]}})
                        self._reject(row)
                    except Exception:
                        left.append(row)
                if len(left) == len(rows):
                    return 0  # nothing written nor set aside (still away): the file stays as it is
                fh.seek(0)
                fh.truncate()
                fh.writelines(json.dumps(row, separators=(",", ":")) + "\n" for row in left)
            return done
        except FileNotFoundError:
            return 0
        finally:
            self._lock.release()

    def _reject(self, row) -> None:
        fd = os.open(self.path + ".rejected", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as rejected:
            rejected.write((row if isinstance(row, str) else json.dumps(row, separators=(",", ":"))) + "\n")


_ROW_TYPES = {"request_id": str, "model": str, "stream": bool, "status": int, "attempts": int,
              "latency_ms": int, "client_disconnected": bool, "created_at": str}
_ROW_OPTIONAL = {"key_id": int, "channel_id": int, "error_type": str, "ttft_ms": int, "upstream_model": str,
                 "affinity": str}


def _parse_row(line: str) -> dict | str:
    """A spooled row, checked; the reason as a string when it is not one octorelay could have written."""
    try:
        row = json.loads(line)
    except ValueError:
        return "not JSON"
    if not isinstance(row, dict):
        return "not an object"
    for name, kind in _ROW_TYPES.items():
        if not isinstance(row.get(name), kind):
            return f"{name}: missing or not {kind.__name__}"
    for name, kind in _ROW_OPTIONAL.items():
        if row.get(name) is not None and not isinstance(row[name], kind):
            return f"{name}: not {kind.__name__}"
    for name in USAGE_FIELDS:
        value = row.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 53:
            return f"{name}: not a count"
    try:
        datetime.fromisoformat(row["created_at"])
    except ValueError:
        return "created_at: not a timestamp"
    return row


def spool_path(database_url: str, folder: str | None = None) -> str:
    """One spool file per database, in `folder` (OCTORELAY_SPOOL_DIR) or a private folder of
    this user's in the temp dir (a shared temp dir must not let others plant or read it)."""
    if folder is None:
        folder = os.path.join(tempfile.gettempdir(), f"octorelay-{os.getuid()}")
        private_folder(folder)
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:12]
    return os.path.join(folder, f"octorelay-settlements-{digest}.jsonl")


def private_folder(folder: str) -> None:
    """Create `folder` 0700, or accept it only if it is a real folder of ours that no one else
    can write to."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(f"the settlement spool folder {folder} is not a private folder of this user "
                          "(set OCTORELAY_SPOOL_DIR to one)")
