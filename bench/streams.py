#!/usr/bin/env python
"""Concurrent streaming client for the benchmark: N streams at once, raw asyncio sockets.

    python bench/streams.py --url http://127.0.0.1:18003 --streams 200 --events 20 --delay-ms 50 [--key K]

Each stream POSTs a streaming Messages request (anthropic-bench-events / anthropic-bench-delay-ms
shape the mock's answer), and records:
  * time to first event: request written -> first SSE event carrying a send stamp received;
  * per-event delay: arrival time at the client minus the mock's send stamp ("bench_ts") of every
    event (both time.time() on this machine).
Prints one JSON line with p50/p99 of both, completed/failed counts, and the worst delay seen.
Bounded: every stream gives up --timeout seconds after its start, the whole run after
--spread-ms + --timeout + 10 s.

--watch-pid PID (the target's gunicorn master, or the mock) also samples, every --sample-ms,
VmRSS and the thread count (/proc/<pid>/task) summed over PID and its children: once just before
the streams start (the baseline) and then while they are open; the JSON line then carries the
baseline, the peak and (peak - baseline) / streams as memory per open stream.
Holding many streams: raise the open-file limit (`ulimit -n`) above 2x --streams if needed;
starts are spread over one inter-event gap (or --spread-ms), so --streams 1000 --delay-ms 250
opens 4 per ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import time
from urllib.parse import urlsplit

_STAMP = re.compile(rb'"bench_ts":([0-9.]+)[,}]')


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def one(host, port, key, events, delay_ms, timeout, out, offset=0.0):
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": True,
                       "messages": [{"role": "user", "content": "Stream please."}]}).encode()
    head = (f"POST /v1/messages HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"anthropic-version: 2023-06-01\r\nanthropic-bench-events: {events}\r\n"
            f"anthropic-bench-delay-ms: {delay_ms}\r\n"
            + (f"x-api-key: {key}\r\n" if key else "")
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    delays, ttfb, ok, status, first_at = [], None, False, None, None
    writer = None
    try:
        await asyncio.sleep(offset)  # starts spread over --spread-ms: events don't all tick at once
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            started = time.time()
            writer.write(head + body)
            await writer.drain()
            buf = b""
            while True:
                data = await reader.read(65536)
                now = time.time()
                if not data:
                    break
                buf += data
                if status is None and b"\r\n" in buf:
                    status = int(buf.split(b" ", 2)[1])
                last = 0
                for m in _STAMP.finditer(buf):
                    if ttfb is None:
                        ttfb = now - started
                        first_at = now
                    sent = float(m.group(1))
                    delays.append((sent, now - sent))
                    last = m.end()
                if b'"message_stop"' in buf:
                    ok = status == 200
                buf = buf[last:] if last else buf[-4096:]
    except (TimeoutError, OSError, ValueError, IndexError):
        pass
    finally:
        if writer is not None:
            writer.close()
    out.append((ok, ttfb, delays, first_at))


def _tree(pid):
    """pid and its descendants (gunicorn master -> workers; mock -> its forks), from /proc."""
    pids, todo = [], [pid]
    while todo and len(pids) < 256:
        p = todo.pop()
        pids.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return pids


def _usage(pid):
    """(VmRSS KB, threads) summed over pid's process tree."""
    rss = threads = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
        except OSError:
            pass
    return rss, threads


async def _sample(pid, every_s, stats, deadline):
    """Peak VmRSS / threads of pid's tree until cancelled or the deadline (bounded loop)."""
    while time.monotonic() < deadline:
        rss, threads = _usage(pid)
        stats["samples"] += 1
        stats["rss_peak_kb"] = max(stats["rss_peak_kb"], rss)
        stats["threads_peak"] = max(stats["threads_peak"], threads)
        await asyncio.sleep(every_s)


def _raise_nofile(streams):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = streams + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


async def run(args):
    u = urlsplit(args.url)
    _raise_nofile(args.streams)
    spread_s = (args.delay_ms if args.spread_ms is None else args.spread_ms) / 1000.0
    out = []
    stats, sampler = None, None
    t0 = time.monotonic()
    if args.watch_pid:
        rss, threads = _usage(args.watch_pid)
        stats = {"rss_base_kb": rss, "threads_base": threads, "rss_peak_kb": rss,
                 "threads_peak": threads, "samples": 0}
        sampler = asyncio.create_task(_sample(args.watch_pid, args.sample_ms / 1000.0, stats,
                                              t0 + spread_s + args.timeout + 10))
    tasks = [asyncio.create_task(one(u.hostname, u.port, args.key, args.events, args.delay_ms,
                                     args.timeout, out, i * spread_s / args.streams))
             for i in range(args.streams)]
    await asyncio.wait(tasks, timeout=spread_s + args.timeout + 10)
    wall = time.monotonic() - t0
    for t in tasks:
        t.cancel()
    if sampler is not None:
        sampler.cancel()
    ttfbs = [t for _, t, _, _ in out if t is not None]
    all_delays = [d for _, _, ds, _ in out for _, d in ds]
    # steady state: events sent once every stream has its first event, i.e. all are open and
    # no start is competing for the relay's CPU (the start burst shows in TTFB and in "all")
    firsts = [f for _, _, _, f in out if f is not None]
    steady_from = max(firsts) if len(firsts) == len(out) and firsts else float("inf")
    delays = [d for _, _, ds, _ in out for sent, d in ds if sent >= steady_from]
    ms = lambda v: None if v is None else round(v * 1000, 2)
    print(json.dumps({
        "streams": args.streams, "completed": sum(1 for ok, _, _, _ in out if ok),
        "ttfb_p50_ms": ms(pct(ttfbs, 50)), "ttfb_p99_ms": ms(pct(ttfbs, 99)),
        "delay_p50_ms": ms(pct(delays, 50)), "delay_p99_ms": ms(pct(delays, 99)),
        "delay_max_ms": ms(max(delays) if delays else None), "events": len(delays),
        "delay_all_p99_ms": ms(pct(all_delays, 99)), "delay_all_max_ms": ms(max(all_delays) if all_delays else None),
        "events_all": len(all_delays),
        "wall_s": round(wall, 2),
        **({} if stats is None else {
            **stats, "per_stream_kb": round((stats["rss_peak_kb"] - stats["rss_base_kb"]) / args.streams, 1)}),
    }))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", default="")
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--delay-ms", type=int, default=50)
    p.add_argument("--timeout", type=float, default=60, help="per stream, seconds")
    p.add_argument("--spread-ms", type=int, default=None,
                   help="spread the starts over this window (default: one inter-event gap, --delay-ms)")
    p.add_argument("--watch-pid", type=int, default=0, help="sample RSS / threads of this process tree")
    p.add_argument("--sample-ms", type=int, default=100)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
