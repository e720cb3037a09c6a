"""A short soak (bench/soak/, ~20 s of load): two gunicorn workers, a flaky and a healthy channel,
mixed streaming / non-streaming clients, some hanging up mid-stream, keys with limits. Afterwards
every routed request has its row, rows add up exactly to the keys' totals, and the workers' memory
and file descriptors stayed flat. The full 5-minute soak: `python -m bench.soak` (see its --help).
"""
from __future__ import annotations

import time

import pytest

from bench import soak

pytestmark = pytest.mark.slow


def test_short_soak_loses_nothing_and_leaks_nothing(env, redis_url, tmp_path):
    started = time.monotonic()
    # 8 threads a worker: its connection pools fill within the warm-up, so the fd samples compare
    # like with like
    report = soak.run(["--seconds", "20", "--warmup", "6", "--workers", "2", "--concurrency", "16",
                       "--threads", "8", "--database-url", env["DATABASE_URL"], "--redis-url", redis_url,
                       "--logdir", str(tmp_path / "soak")])
    elapsed = time.monotonic() - started
    print(report.summary)  # shown when the test fails
    assert report.ok, "\n".join(report.failures)
    stats = report.stats
    assert stats["requests"] > 100, stats
    assert stats["rows"] - stats["refusal_rows"] == stats["routed"] > 100, stats  # and a row per refusal, bounded
    assert stats["disconnects"] > 0, stats
    assert {"200", "404", "429", "402", "400"} <= set(stats["by_status"]), stats["by_status"]
    assert elapsed < 60, f"the short soak took {elapsed:.0f} s"
