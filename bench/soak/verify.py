"""The invariants checked after the load, from the database, Redis and the admin API."""
from __future__ import annotations

import time
from collections import Counter, defaultdict

import requests

from bench.soak.settings import MODEL_MAP, TOKEN_FIELDS, UPSTREAM_KEY


class Verification:
    """Soak's checks (a mixin: it reads the soak's outcomes, keys and server)."""

    def _sql(self, sql: str) -> list[tuple]:
        with self.database.connection_context():
            return list(self.database.execute_sql(sql).fetchall())

    def _key_filter(self) -> str:
        return "key_id IN (%s)" % ",".join(str(int(i)) for i in self.key_ids.values())

    def _row_count(self) -> int:
        return self._sql(f"SELECT COUNT(*) FROM request_log WHERE {self._key_filter()}")[0][0]

    def _verify(self, redis_url: str) -> None:
        with self.outcomes_lock:
            outcomes = list(self.outcomes)
        routed = self.routed()
        final_count = self._wait_for_rows()
        time.sleep(0.5)
        rows = {r[0]: r for r in self._sql(
            "SELECT request_id, key_id, channel_id, model, stream, status, error_type, input_tokens, "
            "output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_nanos, attempts, "
            f"client_disconnected FROM request_log WHERE {self._key_filter()}")}
        self.rows = rows
        self.check(final_count == len(rows), f"rows settled and stable ({len(rows)})")

        # 1. every answer as expected, every routed request has its row and no other one has
        problems = Counter(o.problem for o in outcomes if o.problem)
        self.check(not problems, "every request got a well-formed, expected answer"
                   + (f": {dict(problems.most_common(8))}" if problems else ""))
        routed_ids = {o.request_id for o in routed}
        all_ids = {o.request_id for o in outcomes if o.request_id}
        self.check(None not in routed_ids and len(routed_ids) == len(routed),
                   "every routed answer carries a unique request-id")
        missing = routed_ids - set(rows)
        # refused before routing (400/402/429...): a row too, without a channel or a cost (bounded per key)
        refusals = {rid for rid in set(rows) - routed_ids if rows[rid][2] is None and int(rows[rid][11]) == 0}
        extra = set(rows) - routed_ids - refusals
        self.check(not missing, f"every request that reached routing has its log row "
                   f"({len(routed_ids)} routed, {len(routed_ids & set(rows))} with rows, {len(missing)} missing"
                   + (f", e.g. {sorted(missing)[:3]}" if missing else "") + ")")
        self.check(not (refusals - all_ids), f"refusal rows belong to refused requests ({len(refusals)} rows)")
        self.refusal_rows = len(refusals)
        self.check(not extra, f"no other row ({len(extra)} extra"
                   + (f", of which {len(extra - all_ids)} unknown to the clients" if extra else "") + ")")

        # 2. per key: rows add up to the key's totals, exactly (nanos from the DB)
        sums = defaultdict(lambda: [0, 0, 0])  # key_id -> [rows, cost_nanos, tokens]
        for r in rows.values():
            s = sums[r[1]]
            s[0] += 1
            s[1] += int(r[11])
            s[2] += sum(int(r[i]) for i in (7, 8, 9, 10))
        keys = {r[0]: r for r in self._sql(
            f"SELECT id, used_nanos, used_tokens, budget_nanos, token_quota FROM api_key WHERE "
            f"id IN ({','.join(str(i) for i in self.key_ids.values())})")}
        self.key_rows, self.key_sums = keys, sums
        bad = [name for name, kid in self.key_ids.items()
               if (sums[kid][1], sums[kid][2]) != (int(keys[kid][1]), int(keys[kid][2]))]
        total_rows_nanos = sum(s[1] for s in sums.values())
        total_key_nanos = sum(int(k[1]) for k in keys.values())
        self.check(not bad and total_rows_nanos == total_key_nanos,
                   f"sum of rows' cost_nanos == sum of keys' used_nanos ({total_rows_nanos} == {total_key_nanos}) "
                   f"and tokens likewise, key by key" + (f"; differ for {bad}" if bad else ""))
        usage = self.admin("GET", "/admin/usage", params={"group_by": "key"}).json()["data"]
        api = {u["key_id"]: u for u in usage if u["key_id"] in sums}
        api_requests = sum(u["requests"] for u in api.values())
        api_tokens = sum(u[f] for u in api.values() for f in TOKEN_FIELDS)
        self.check(api_requests == len(rows) and api_tokens == sum(s[2] for s in sums.values()),
                   f"GET /admin/usage agrees: {api_requests} requests, {api_tokens} tokens")
        self.api_used_usd = sum(u["used_usd"] for u in self.admin("GET", "/admin/keys").json()["data"]
                                if u["id"] in sums)

        # 3. each row's usage is what the client saw; its cost is tokens x the upstream model's price
        mismatched, mispriced = [], []
        for o in outcomes:
            row = rows.get(o.request_id)
            if row is not None and o.usage is not None:
                if tuple(int(row[i]) for i in (7, 8, 9, 10)) != tuple(o.usage[f] for f in TOKEN_FIELDS):
                    mismatched.append(o.request_id)
        for r in rows.values():
            price = self.prices.get(MODEL_MAP.get(r[3], r[3])) if r[2] is not None else None
            tokens = [int(r[i]) for i in (7, 8, 9, 10)]
            want = 0 if price is None else (tokens[0] * price["input"] + tokens[1] * price["output"]
                                            + tokens[2] * price["cache_write"] + tokens[3] * price["cache_read"]
                                            + 500) // 1000
            if int(r[11]) != want:
                mispriced.append(r[0])
        compared = sum(1 for o in outcomes if o.usage is not None and o.request_id in rows)
        self.check(not mismatched, f"row tokens == usage the client saw ({compared} compared, "
                   f"{len(mismatched)} differ" + (f", e.g. {mismatched[:3]}" if mismatched else "") + ")")
        self.check(not mispriced, f"row cost == tokens x price of the upstream model ({len(rows)} rows, "
                   f"{len(mispriced)} differ" + (f", e.g. {mispriced[:3]}" if mispriced else "") + ")")

        # 4. disconnects and broken streams are on the record
        gone = [o for o in outcomes if o.disconnected]
        not_flagged = [o.request_id for o in gone if not (rows.get(o.request_id) or [False] * 14)[13]]
        self.check(not not_flagged, f"every client hang-up has a client_disconnected row ({len(gone)} hang-ups, "
                   f"{len(not_flagged)} without" + (f", e.g. {not_flagged[:3]}" if not_flagged else "") + ")")
        flagged = sum(1 for r in rows.values() if r[13])
        self.check(flagged == len(gone), f"client_disconnected rows == hang-ups ({flagged} == {len(gone)})")
        broken = [o for o in outcomes if o.stream_error]
        unmarked = [o.request_id for o in broken if not (rows.get(o.request_id) or [None] * 14)[6]]
        self.check(not unmarked, f"every stream broken upstream has a row with an error type "
                   f"({len(broken)} broken, {len(unmarked)} unmarked)")

        # 5. nothing left in flight: concurrency slots, budget reservations, the streams gauge
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            leftovers = {}
            for kind in ("inflight", "budget", "quota"):
                for name in client.scan_iter(match=f"octorelay:{kind}:*", count=500):
                    name = name.decode()
                    if not name.endswith(":w") and client.zcard(name):
                        leftovers[name] = client.zcard(name)
        finally:
            client.close()
        self.check(not leftovers, "no concurrency slot or budget reservation left in Redis"
                   + (f": {leftovers}" if leftovers else ""))
        metrics = requests.get(self.base_url + "/metrics", timeout=10).text
        in_flight = [line for line in metrics.splitlines() if line.startswith("octorelay_streams_in_flight")]
        value = float(in_flight[0].split()[-1]) if in_flight else 0.0
        self.check(value == 0, f"octorelay_streams_in_flight is {value:g} after the load")

        # 6. the workers: same processes, flat memory, no fd leak
        self.check(self.workers_at_start == self.workers_at_end and len(self.workers_at_end) == self.args.workers,
                   f"no worker restarted (pids {self.workers_at_start} -> {self.workers_at_end})")
        start, end = self.samples.get("start", {}), self.samples.get("end", {})
        for pid in sorted(set(start) & set(end)):
            growth_mb = (end[pid].rss_kb - start[pid].rss_kb) / 1024
            fd_growth = end[pid].fds - start[pid].fds
            self.check(growth_mb <= self.args.max_rss_growth_mb,
                       f"worker {pid}: RSS {start[pid].rss_kb / 1024:.1f} -> {end[pid].rss_kb / 1024:.1f} MB "
                       f"({growth_mb:+.1f} MB, limit +{self.args.max_rss_growth_mb:g})")
            self.check(fd_growth <= self.args.max_fd_growth,
                       f"worker {pid}: fds {start[pid].fds} -> {end[pid].fds} ({fd_growth:+d}, "
                       f"limit +{self.args.max_fd_growth})")

        # 7. the logs: no lost accounting, no crash
        log_text = self.server.stderr_path.read_text(errors="replace")
        bad_lines = Counter()
        for line in log_text.splitlines():
            if "failed to record request" in line or "settlement spooled" in line:
                bad_lines["settlement not written at once"] += 1
            elif "unhandled error" in line:
                bad_lines["unhandled error"] += 1
            elif "WORKER TIMEOUT" in line or "Worker exiting" in line or "was sent SIGKILL" in line:
                bad_lines["worker died"] += 1
            elif "Traceback" in line:
                bad_lines["traceback"] += 1
        self.check(not bad_lines, "server log has no lost record, unhandled error or worker death"
                   + (f": {dict(bad_lines)}" if bad_lines else ""))
        secrets_used = {"admin token": self.admin_token, "upstream key": UPSTREAM_KEY,
                        "secret key": self.secret_key, **{f"key {n}": k for n, k in self.key_secrets.items()}}
        leaked = [name for name, value in secrets_used.items()
                  if value in log_text or value in self.server.stdout_path.read_text(errors="replace")]
        self.check(not leaked, "no secret in the server's output" + (f": {leaked} leaked" if leaked else ""))
        upstream_errors = sum(len(u.errors) for u in self.upstreams)
        self.check(upstream_errors == 0, f"scripted upstream raised {upstream_errors} unexpected errors")
        self.check(len(outcomes) > 0 and sum(1 for o in outcomes if o.status == 200) > 0,
                   "the load ran")

    # -- teardown and reporting -------------------------------------------------------------
