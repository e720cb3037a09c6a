"""`python -m bench.soak`: arguments, run, exit status."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from bench.soak.report import Report
from bench.soak.settings import SetupError
from bench.soak.soak import Soak


def parse_args(argv=None) -> argparse.Namespace:
    import bench.soak as package

    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=package.__doc__.split("\n\n")[0],
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

