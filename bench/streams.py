#!/usr/bin/env python
"""Concurrent streaming client for the benchmark: N streams at once, raw asyncio sockets.

    python bench/streams.py --url http://127.0.0.1:18003 --streams 200 --events 20 --delay-ms 50 [--key K]

Each stream POSTs a streaming Messages request (anthropic-bench-events / anthropic-bench-delay-ms
shape the mock's answer), and records:
  * time to first event: request written -> first SSE event carrying a send stamp received;
  * per-event delay: arrival time at the client minus the mock's send stamp ("bench_ts") of every
    event (both time.time() on this machine).
Prints one JSON line with p50/p99 of both, completed/failed counts, and the worst delay seen.
Bounded: every stream gives up after --timeout seconds, the whole run after --timeout + 10.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
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
    delays, ttfb, ok, status = [], None, False, None
    writer = None
    try:
        await asyncio.sleep(offset)  # spread starts over one inter-event gap: events don't all tick at once
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
                    delays.append(now - float(m.group(1)))
                    last = m.end()
                if b'"message_stop"' in buf:
                    ok = status == 200
                buf = buf[last:] if last else buf[-4096:]
    except (TimeoutError, OSError, ValueError, IndexError):
        pass
    finally:
        if writer is not None:
            writer.close()
    out.append((ok, ttfb, delays))


async def run(args):
    u = urlsplit(args.url)
    out = []
    tasks = [asyncio.create_task(one(u.hostname, u.port, args.key, args.events, args.delay_ms,
                                     args.timeout, out, i * args.delay_ms / 1000.0 / args.streams))
             for i in range(args.streams)]
    await asyncio.wait(tasks, timeout=args.timeout + 10)
    ttfbs = [t for ok, t, _ in out if t is not None]
    delays = [d for _, _, ds in out for d in ds]
    ms = lambda v: None if v is None else round(v * 1000, 2)
    print(json.dumps({
        "streams": args.streams, "completed": sum(1 for ok, _, _ in out if ok),
        "ttfb_p50_ms": ms(pct(ttfbs, 50)), "ttfb_p99_ms": ms(pct(ttfbs, 99)),
        "delay_p50_ms": ms(pct(delays, 50)), "delay_p99_ms": ms(pct(delays, 99)),
        "delay_max_ms": ms(max(delays) if delays else None), "events": len(delays)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", default="")
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--delay-ms", type=int, default=50)
    p.add_argument("--timeout", type=float, default=60)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
