"""Turn bench/run.sh's results (JSON lines) into the markdown tables.

    python bench/table.py results.jsonl --sets "50 200" --events 20 --delay-ms 50 \
        [--machine "…"] [--many "1000 20 250 250"]

Each result line is {"row": id, "kind": k, "data": {...}}. kind "meta" gives a row's label and
the id of the bare proxy it is compared with ("bare", same shape and worker class); c1 / c8 /
c64 are wrk runs (several lines each when run in rounds), s<N> stream runs, rss the peak RSS,
many the open-streams run.
"""
import argparse
import json
import statistics


def rounds(res) -> str:
    n = max((len(v) for (_, kind), v in res.items() if kind in ("c1", "c8", "c64")), default=1)
    if n == 1:
        return "one run each"
    return (f"{n} rounds, medians; each ratio / Δ vs bare is the median of the rounds' own, "
            "each measured right after its bare proxy")


def ratio_of(a, b):
    return a / b


def difference(a, b):
    return a - b


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--sets", default="50 200")
    p.add_argument("--events", default="20")
    p.add_argument("--delay-ms", default="50")
    p.add_argument("--machine", default="")
    p.add_argument("--many", default="", help='"STREAMS EVENTS DELAY_MS SPREAD_MS" of the open-streams run')
    p.add_argument("--sizes", default="", help="body sizes (bytes) of the Claude Code-sized rows")
    args = p.parse_args()
    sets = args.sets.split()
    res = {}
    rows = []
    for line in open(args.results):
        rec = json.loads(line)
        res.setdefault((rec["row"], rec["kind"]), []).append(rec["data"] or {})
        if rec["row"] not in rows:
            rows.append(rec["row"])

    def runs(row, kind, field):
        """The field of each run of `kind` (wrk rows run in rounds: BENCH_ROUNDS), in order."""
        return [d.get(field) for d in res.get((row, kind)) or []]

    def get(row, kind, field):
        """The median over the rounds (the value itself for a kind measured once)."""
        values = runs(row, kind, field)
        numbers = [v for v in values if isinstance(v, (int, float))]
        if numbers and len(numbers) == len(values):
            return statistics.median(numbers)
        return values[-1] if values else None

    def paired(row, bare, kind, field, op):
        """The median over rounds of op(row's run, its bare proxy's run in the same round): each round
        measures a row right after its bare proxy, so this cancels what the machine did meanwhile."""
        pairs = [(a, b) for a, b in zip(runs(row, kind, field), runs(bare, kind, field))
                 if a is not None and b is not None and (b or op is not ratio_of)]
        return statistics.median(op(a, b) for a, b in pairs) if pairs else None

    def label(row):
        return get(row, "meta", "label") or row

    def num(v, fmt="{:,.0f}"):
        return "–" if v is None else fmt.format(v)

    def ratio(a, b):
        return "–" if not a or not b else f"{a / b:.2f}×"

    def times(v):
        return "–" if v is None else f"{v:.2f}×"

    head = ["target", "req/s c=8", "req/s c=64", "c=64 vs direct", "c=64 vs bare", "c=8 vs bare",
            "c=1 p50 / p99 ms", "c=1 p50 Δ vs bare"]
    for n in sets:
        head += [f"{n} streams: TTFB p50 / p99 ms", f"{n} streams: event delay, steady p50 / p99 (max) ms",
                 f"{n} streams: event delay, all p99 (max) ms", f"{n} streams: done"]
    head += ["peak RSS MB"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        bare = get(row, "meta", "bare")
        cmp = bare is not None and bare != row  # an octorelay row, compared with its bare proxy
        c8, c64 = get(row, "c8", "rps"), get(row, "c64", "rps")
        p50, p99 = get(row, "c1", "p50_ms"), get(row, "c1", "p99_ms")
        errs = sum(v or 0 for k in ("c1", "c8", "c64") for v in runs(row, k, "errors"))
        cells = [label(row) + (f" ({errs} wrk errors)" if errs else ""),
                 num(c8), num(c64), ratio(c64, get("direct", "c64", "rps")),
                 times(paired(row, bare, "c64", "rps", ratio_of)) if cmp else "–",
                 times(paired(row, bare, "c8", "rps", ratio_of)) if cmp else "–",
                 f"{num(p50, '{:.2f}')} / {num(p99, '{:.2f}')}",
                 f"{delta:+.2f}" if cmp and (delta := paired(row, bare, "c1", "p50_ms", difference)) is not None
                 else "–"]
        for n in sets:
            k = f"s{n}"
            cells += [f"{num(get(row, k, 'ttfb_p50_ms'), '{:.1f}')} / {num(get(row, k, 'ttfb_p99_ms'), '{:.1f}')}",
                      f"{num(get(row, k, 'delay_p50_ms'), '{:.2f}')} / {num(get(row, k, 'delay_p99_ms'), '{:.2f}')}"
                      f" ({num(get(row, k, 'delay_max_ms'), '{:.1f}')})",
                      f"{num(get(row, k, 'delay_all_p99_ms'), '{:.2f}')} ({num(get(row, k, 'delay_all_max_ms'), '{:.1f}')})",
                      f"{num(get(row, k, 'completed'))}/{n}"]
        kb = get(row, "rss", "kb")
        cells.append(num(kb / 1024 if kb else None, "{:.0f}"))
        out.append("| " + " | ".join(cells) + " |")

    if args.machine:
        print(f"\n{args.machine}")
    if any(kind == "c1" for _, kind in res):
        print(f"\noctorelay bench — loopback; streams: {args.events} events {args.delay_ms} ms apart; "
              f"wrk c=1 unloaded, c=8/c=64 closed loop; {rounds(res)}\n")
        print("\n".join(out))

    sizes = [s for s in args.sizes.split() if any(kind == f"size{s}" for _, kind in res)]
    if sizes:
        head = ["target"]
        for size in sizes:
            kb = f"{int(size) / 1000:,.0f} KB" if int(size) < 1_000_000 else f"{int(size) / 1e6:g} MB"
            head += [f"{kb}: p50 / p99 ms", f"{kb}: p50 Δ vs bare", f"{kb}: CPU ms per request (Δ vs bare)"]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def cpu_ms(row, size):
            d = (res.get((row, f"size{size}")) or [{}])[-1]
            if not d.get("requests") or d.get("cpu_ticks") is None:
                return None
            return d["cpu_ticks"] * 1000 / d["clk_tck"] / d["requests"]

        for row in rows:
            if not any((row, f"size{s}") in res for s in sizes):
                continue
            bare = get(row, "meta", "bare")
            cmp = bare is not None and bare != row
            cells = [label(row)]
            for size in sizes:
                k = f"size{size}"
                p50, p99, errs = get(row, k, "p50_ms"), get(row, k, "p99_ms"), get(row, k, "errors")
                bp50 = get(bare, k, "p50_ms") if cmp else None
                cpu, bcpu = cpu_ms(row, size), cpu_ms(bare, size) if cmp else None
                cells += [f"{num(p50, '{:.2f}')} / {num(p99, '{:.2f}')}" + (f" ({errs} errors)" if errs else ""),
                          f"{p50 - bp50:+.2f}" if p50 is not None and bp50 is not None else "–",
                          num(cpu, "{:.2f}") + (f" ({cpu - bcpu:+.2f})" if cpu is not None and bcpu is not None else "")]
            out.append("| " + " | ".join(cells) + " |")
        print("\nClaude Code-sized requests (bench/bodies.py: the captured `claude -p` turn, grown by tool calls), "
              "non-streaming, wrk c=1; CPU = utime + stime of the target's processes / requests "
              "(the direct row: the mock's)\n")
        print("\n".join(out))

    many_rows = [r for r in rows if (r, "many") in res]
    if many_rows and args.many:
        n, events, delay, spread = (args.many.split() + [""])[:4]
        spread = spread or delay
        head = ["target", "done", "TTFB p50 / p99 ms", "event delay, steady p50 / p99 (max) ms",
                "event delay, all p99 (max) ms", "wall s",
                "peak threads (before)", "memory per open stream KB", "peak RSS MB (before)"]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in many_rows:
            def g(field):
                return get(row, "many", field)
            base, peak = g("rss_base_kb"), g("rss_peak_kb")
            out.append("| " + " | ".join([
                label(row),
                f"{num(g('completed'))}/{num(g('streams') or int(n))}",
                f"{num(g('ttfb_p50_ms'), '{:,.1f}')} / {num(g('ttfb_p99_ms'), '{:,.1f}')}",
                f"{num(g('delay_p50_ms'), '{:.2f}')} / {num(g('delay_p99_ms'), '{:.2f}')}"
                f" ({num(g('delay_max_ms'), '{:.1f}')})",
                f"{num(g('delay_all_p99_ms'), '{:.2f}')} ({num(g('delay_all_max_ms'), '{:.1f}')})",
                num(g("wall_s"), "{:.1f}"),
                f"{num(g('threads_peak'))} ({num(g('threads_base'))})",
                num(g("per_stream_kb"), "{:,.1f}"),
                f"{num(peak / 1024 if peak else None, '{:.0f}')} ({num(base / 1024 if base else None, '{:.0f}')})",
            ]) + " |")
        print(f"\n{int(n):,} open streams — {events} events {delay} ms apart, all opened within {spread} ms; "
              "RSS (VmRSS) and threads summed over the target's processes, sampled every 100 ms; "
              "memory per open stream = (peak − before) / streams\n")
        print("\n".join(out))


if __name__ == "__main__":
    main()
