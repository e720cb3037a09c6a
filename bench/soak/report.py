"""The soak's report: figures and a markdown summary."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.soak.settings import KEYS, KIND_WEIGHTS, ROUTED_KINDS, TOKEN_FIELDS


@dataclass
class Report:
    ok: bool
    summary: str
    stats: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)


def fd_kinds_change(start: dict, end: dict) -> str:
    parts = []
    for kind in sorted(set(start) | set(end)):
        a, b = start.get(kind, 0), end.get(kind, 0)
        parts.append(f"{kind} {a}" if a == b else f"{kind} {a}→{b}")
    return ", ".join(parts)


class Reporting:
    """Soak's figures and summary (a mixin)."""

    def _stats(self) -> dict:
        outcomes = self.outcomes
        return {
            "requests": len(outcomes),
            "routed": len(self.routed()),
            "rows": len(getattr(self, "rows", {})),
            "refusal_rows": getattr(self, "refusal_rows", 0),
            "by_status": dict(Counter(str(o.status) for o in outcomes)),
            "disconnects": sum(1 for o in outcomes if o.disconnected),
            "stream_errors": sum(1 for o in outcomes if o.stream_error),
            "failures": list(self.failures),
            "samples": {phase: {pid: {"rss_kb": s.rss_kb, "fds": s.fds} for pid, s in sample.items()}
                        for phase, sample in self.samples.items()},
            "load_seconds": round(self.load_seconds, 1),
            "client_seconds": round(self.client_seconds, 1),
        }

    def _summary(self, wall: float) -> str:
        args, outcomes = self.args, self.outcomes
        db = "PostgreSQL" if getattr(self, "database_url", "").startswith("postgres") else "SQLite"
        out = [f"## octorelay soak: {args.seconds:g} s load ({self.client_seconds:.0f} s of clients, "
               f"{wall:.0f} s wall), {args.workers} workers, {args.concurrency} clients, {db} + Redis",
               "", f"**{'PASS' if not self.failures else 'FAIL'}** — {len(outcomes)} requests "
               f"({len(outcomes) / max(self.client_seconds, 1e-9):.0f}/s)", ""]
        out += ["### Requests by outcome", "", "| kind | sent | 200 | 404 | 429 | 402 | 400 | hung up | "
                "stream error | problem |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for kind in KIND_WEIGHTS:
            mine = [o for o in outcomes if o.kind == kind]
            status = Counter(o.status for o in mine)
            out.append(f"| {kind} | {len(mine)} | {status[200]} | {status[404]} | {status[429]} | {status[402]} | "
                       f"{status[400]} | {sum(o.disconnected for o in mine)} | {sum(o.stream_error for o in mine)} "
                       f"| {sum(1 for o in mine if o.problem)} |")
        status = Counter(o.status for o in outcomes)
        durations = sorted(o.seconds for o in outcomes if o.kind != "disconnect")
        if durations:
            def q(p):
                return durations[min(len(durations) - 1, int(p * len(durations)))]
            latency = (f"client-side duration (hang-ups excluded): p50 {q(0.5) * 1000:.0f} ms, "
                       f"p99 {q(0.99) * 1000:.0f} ms, max {durations[-1] * 1000:.0f} ms")
        else:
            latency = ""
        out.append(f"| **all** | {len(outcomes)} | {status[200]} | {status[404]} | {status[429]} | {status[402]} | "
                   f"{status[400]} | {sum(o.disconnected for o in outcomes)} | "
                   f"{sum(o.stream_error for o in outcomes)} | {sum(1 for o in outcomes if o.problem)} |")
        out += ["", latency]
        rows = getattr(self, "rows", {})
        if rows:
            attempts = Counter(int(r[12]) for r in rows.values())
            out += ["", "### Accounting", "",
                    f"- routed requests: {len(self.routed())}; log rows: {len(rows)} "
                    f"(attempts per row: {dict(sorted(attempts.items()))}; client_disconnected: "
                    f"{sum(1 for r in rows.values() if r[13])}; with error_type: "
                    f"{sum(1 for r in rows.values() if r[6])})",
                    "- tokens in rows: " + ", ".join(f"{f} {sum(int(r[i]) for r in rows.values()):,}"
                                                      for i, f in zip((7, 8, 9, 10), TOKEN_FIELDS)),
                    f"- cost: rows {sum(int(r[11]) for r in rows.values()):,} nanos = keys' used "
                    f"{sum(int(k[1]) for k in self.key_rows.values()):,} nanos (${self.api_used_usd:.6f} via "
                    f"the admin API)",
                    f"- upstream flaky: {dict(sorted(self.flaky.counts.items()))}",
                    f"- upstream healthy: {dict(sorted(self.healthy.counts.items()))}",
                    "", "| key | limits | sent | 200 | 429 | 402 | rows | row nanos | used nanos | row tokens "
                    "| used tokens |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for name, limits, _ in KEYS:
                kid = self.key_ids[name]
                mine = Counter(o.status for o in outcomes if o.key == name and o.kind in ROUTED_KINDS)
                s, k = self.key_sums[kid], self.key_rows[kid]
                lim = ", ".join(f"{a}={b}" for a, b in limits.items()) or "-"
                out.append(f"| {name} | {lim} | {sum(mine.values())} | {mine[200]} | {mine[429]} | {mine[402]} | "
                           f"{s[0]} | {s[1]:,} | {int(k[1]):,} | {s[2]:,} | {int(k[2]):,} |")
        start, end = self.samples.get("start", {}), self.samples.get("end", {})
        if start:
            out += ["", "### Workers (quiet moments: after the warm-up, after the load)", "",
                    "| pid | RSS start MB | RSS end MB | Δ MB | RSS min–max during load MB | fds start | "
                    "fds end | Δ fds | fds by kind (start→end) |", "|---|---:|---:|---:|---|---:|---:|---:|---|"]
            for pid in sorted(start):
                a, b = start[pid], end.get(pid)
                trend = [t[1][pid] for t in self.rss_trend if pid in t[1]]
                span = f"{min(trend) / 1024:.1f}–{max(trend) / 1024:.1f}" if trend else "-"
                if b is None:
                    out.append(f"| {pid} | {a.rss_kb / 1024:.1f} | gone | | {span} | {a.fds} | gone | | |")
                    continue
                out.append(f"| {pid} | {a.rss_kb / 1024:.1f} | {b.rss_kb / 1024:.1f} | "
                           f"{(b.rss_kb - a.rss_kb) / 1024:+.1f} | {span} | {a.fds} | {b.fds} | {b.fds - a.fds:+d} | "
                           f"{fd_kinds_change(a.fd_kinds, b.fd_kinds)} |")
        out += ["", "### Invariants", ""]
        out += [f"- ❌ {f}" for f in self.failures]
        out += [f"- ✅ {n}" for n in self.notes]
        if self.failures and self.logdir is not None:
            out += ["", f"Server logs kept in {self.logdir}"]
        return "\n".join(out)
