"""A bounded soak of octorelay on loopback: real gunicorn workers, PostgreSQL (or SQLite) and Redis,
a scripted upstream with one flaky and one healthy channel, and a closed-loop load of mixed
streaming / non-streaming clients, some of which hang up mid-stream.

    python -m bench.soak --seconds 300 --workers 2 --concurrency 16

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

Layout: settings (models, kinds, keys), upstream (the scripted channels), clients (the load),
processes (gunicorn and /proc samples), soak (the run), verify (the invariants), report,
databases, cli (arguments and exit status).

It prints one markdown summary and exits 0 when every invariant holds, 1 when one fails, 2 when the
soak could not be set up. Everything it starts (the upstream, gunicorn) is stopped in a finally
block, by PID. Defaults: DATABASE_URL is postgresql://postgres@127.0.0.1:5432/<--db> (created if
missing; its schema is reset, the database belongs to the soak) and REDIS_URL is
redis://127.0.0.1:6379/<--redis-db>; --database-url / --redis-url (or the DATABASE_URL / REDIS_URL
environment variables) point elsewhere: such a database is used as it is (it must have no enabled
channels) and such a Redis database is FLUSHED, like the default one.
"""
from __future__ import annotations

from bench.soak.cli import main, parse_args, run
from bench.soak.report import Report

__all__ = ["Report", "main", "parse_args", "run"]
