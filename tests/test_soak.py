"""A short soak (bench/soak.py, ~20 s of load): two gunicorn workers, a flaky and a healthy channel,
mixed streaming / non-streaming clients, some hanging up mid-stream, keys with limits. Afterwards
every routed request has its row, rows add up exactly to the keys' totals, and the workers' memory
and file descriptors stayed flat. The full 5-minute soak: `python bench/soak.py` (see its --help).
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK_PATH = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("octorelay_bench_soak", SOAK_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def test_short_soak_loses_nothing_and_leaks_nothing(env, redis_url, tmp_path):
    soak = load_soak()
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
