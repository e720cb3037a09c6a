"""Turn bench/run.sh's results (JSON lines) into one markdown table.

    python bench/table.py results.jsonl "50 200" EVENTS DELAY_MS NPROC
"""
import json
import sys

LABELS = {
    "direct": "direct to mock (floor)",
    "bare1": "bare proxy, 1×64 gthread",
    "octo1": "octorelay default, 1×64, SQLite",
    "bare2": "bare proxy, 2×32 gthread",
    "octo2": "octorelay scaled, 2×32, PG+Redis",
}
BARE_OF = {"octo1": "bare1", "octo2": "bare2", "bare1": "bare1", "bare2": "bare2"}


def main():
    path, sets, events, delay_ms, nproc = sys.argv[1:6]
    sets = sets.split()
    res = {}
    rows = []
    for line in open(path):
        rec = json.loads(line)
        res[(rec["row"], rec["kind"])] = rec["data"] or {}
        if rec["row"] not in rows:
            rows.append(rec["row"])

    def get(row, kind, field):
        return (res.get((row, kind)) or {}).get(field)

    def num(v, fmt="{:,.0f}"):
        return "–" if v is None else fmt.format(v)

    def ratio(a, b):
        return "–" if not a or not b else f"{a / b:.2f}×"

    head = ["target", "req/s c=8", "req/s c=64", "c=64 vs direct", "c=64 vs bare", "c=8 vs bare",
            "c=1 p50 / p99 ms", "c=1 p50 Δ vs bare"]
    for n in sets:
        head += [f"{n} streams: TTFB p50 / p99 ms", f"{n} streams: event delay p50 / p99 (max) ms",
                 f"{n} streams: done"]
    head += ["peak RSS MB"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        bare = BARE_OF.get(row)
        c8, c64 = get(row, "c8", "rps"), get(row, "c64", "rps")
        p50, p99 = get(row, "c1", "p50_ms"), get(row, "c1", "p99_ms")
        errs = sum(get(row, k, "errors") or 0 for k in ("c1", "c8", "c64"))
        bp50 = get(bare, "c1", "p50_ms") if bare else None
        cells = [LABELS.get(row, row) + (f" ({errs} wrk errors)" if errs else ""),
                 num(c8), num(c64), ratio(c64, get("direct", "c64", "rps")),
                 ratio(c64, get(bare, "c64", "rps")) if bare and bare != row else "–",
                 ratio(c8, get(bare, "c8", "rps")) if bare and bare != row else "–",
                 f"{num(p50, '{:.2f}')} / {num(p99, '{:.2f}')}",
                 f"{p50 - bp50:+.2f}" if p50 is not None and bp50 is not None and bare != row else "–"]
        for n in sets:
            k = f"s{n}"
            cells += [f"{num(get(row, k, 'ttfb_p50_ms'), '{:.1f}')} / {num(get(row, k, 'ttfb_p99_ms'), '{:.1f}')}",
                      f"{num(get(row, k, 'delay_p50_ms'), '{:.2f}')} / {num(get(row, k, 'delay_p99_ms'), '{:.2f}')}"
                      f" ({num(get(row, k, 'delay_max_ms'), '{:.1f}')})",
                      f"{num(get(row, k, 'completed'))}/{n}"]
        kb = get(row, "rss", "kb")
        cells.append(num(kb / 1024 if kb else None, "{:.0f}"))
        out.append("| " + " | ".join(cells) + " |")
    print(f"\noctorelay bench — {nproc} CPUs, loopback; streams: {events} events {delay_ms} ms apart; "
          "wrk c=1 unloaded, c=8/c=64 closed loop\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
