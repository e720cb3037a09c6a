"""The PostgreSQL connection budget, checked once when the web process starts.

Every worker of every instance holds up to OCTORELAY_DB_POOL pooled
connections plus one for the change feed (services/changes.py LISTEN); all
of them, and the CLI, the release phase and any other client, must fit in
what the server allows this role. Past it, PostgreSQL refuses with "too many
clients" and requests get 503s. The start logs the sum and reads the
server's limits, and warns when one instance cannot fit.

Runs in the gunicorn master, before any worker: it uses psycopg2 alone and
must not import peewee (a gevent worker patches threading after the fork, and
peewee's connection state must be built on the patched one).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

CONNECT_TIMEOUT_S = 3
LIMITS_SQL = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       (SELECT datconnlimit FROM pg_database WHERE datname = current_database()),
       (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())::int - 1
"""


@dataclass(frozen=True)
class Limits:
    max_connections: int
    reserved: int = 0
    database_limit: int = -1  # -1: none
    role_limit: int = -1
    superuser: bool = False
    open_now: int = 0  # other connections to this database when we looked

    @property
    def allowed(self) -> int:
        """Connections this role may open (superusers ignore the database and role limits)."""
        if self.superuser:
            return self.max_connections
        limits = [self.max_connections - self.reserved]
        limits += [n for n in (self.database_limit, self.role_limit) if n >= 0]
        return min(limits)


def per_worker(pool: int) -> int:
    return pool + 1  # the pool, and the change feed's LISTEN connection


def assess(workers: int, pool: int, limits: Limits) -> tuple[int, str]:
    """(log level, one line) for `workers` workers of `pool` connections against `limits`."""
    need = workers * per_worker(pool)
    where = [f"max_connections {limits.max_connections}"]
    if not limits.superuser:
        where[0] += f" - {limits.reserved} reserved"
        if limits.database_limit >= 0:
            where.append(f"database limit {limits.database_limit}")
        if limits.role_limit >= 0:
            where.append(f"role limit {limits.role_limit}")
    head = (f"PostgreSQL connection budget: {workers} workers x ({pool} pool + 1 change feed) = "
            f"{need} connections for this instance; the server allows {limits.allowed} "
            f"({'; '.join(where)}); {limits.open_now} open now")
    if need > limits.allowed:
        return logging.WARNING, (head + ": one instance cannot fit. Lower WEB_CONCURRENCY or "
                                 "OCTORELAY_DB_POOL, or raise the server's limit")
    if need + limits.open_now > limits.allowed:
        return logging.WARNING, (head + ": it does not fit next to the connections open now "
                                 "(another instance, a deploy's old one?); requests may get 503s")
    return logging.INFO, (head + f": room for {limits.allowed // need} such instances, less what "
                          "the CLI, the release phase and other clients hold")


def read_limits(database_url: str) -> Limits:
    import psycopg2

    conn = psycopg2.connect(database_url, connect_timeout=CONNECT_TIMEOUT_S,
                            application_name="octorelay-budget-check")
    try:
        with conn.cursor() as cur:
            cur.execute(LIMITS_SQL)
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:  # a SELECT of settings always has its one row
        raise RuntimeError("PostgreSQL returned no row for its own settings")
    return Limits(int(row[0]), int(row[1]), int(row[2]), int(row[3]), bool(row[4]), max(0, int(row[5])))


def check(settings, workers: int, log=None) -> tuple[int, str] | None:
    """Log the budget for this web process (nothing for SQLite); never stops the start."""
    log = log or logging.getLogger("octorelay.db")
    if settings.is_sqlite:
        return None
    try:
        limits = read_limits(settings.database_url)
    except Exception as exc:
        line = (f"PostgreSQL connection budget: {workers} workers x ({settings.db_pool} pool + 1 "
                f"change feed) = {workers * per_worker(settings.db_pool)} connections for this "
                f"instance; could not read the server's limits ({type(exc).__name__})")
        log.warning(line)
        return logging.WARNING, line
    level, line = assess(workers, settings.db_pool, limits)
    log.log(level, line)
    return level, line
