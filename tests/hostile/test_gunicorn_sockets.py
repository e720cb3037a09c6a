"""3. A real gunicorn (one worker) on raw sockets: CR/LF injection, 16 KB and 64 KB header
values, bodies over OCTORELAY_MAX_BODY_MB sent slowly (Content-Length and chunked),
Transfer-Encoding + Content-Length smuggling, invalid chunk sizes, bodies that never finish.
Afterwards the server answers /healthz and its only worker is the one it booted with (see the
package docstring for what counts as \"the worker did not die\")."""
from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.hostile.checks import Problems
from tests.support.admin import AdminClient
from tests.support.bodies import messages_bytes
from tests.support.constants import ADMIN_TOKEN, SECRETS_USED, UPSTREAM_KEY
from tests.support.processes import serve_gunicorn, wait_for_workers, worker_pids
from tests.support.raw_http import HOST, RawConn, exchange, healthz_ok

LIMIT_MB = 0.05
LIMIT = int(LIMIT_MB * 1024 * 1024)
SMALL_BODY = messages_bytes("claude-x", 5)

UNEXPECTED_STDERR = ("WORKER TIMEOUT", "Worker exiting", "Error handling request", '"unhandled error"',
                     "failed to record request", "Traceback")


@dataclass
class Gunicorn:
    port: int
    proc: object
    admin: AdminClient
    key: str
    channel_id: int
    upstream: object
    workers: list

    def request(self, method: str, path: str, *, headers: bytes = b"", body: bytes = b"",
                framing: bytes | None = None) -> bytes:
        if framing is None:
            framing = b"Content-Length: %d\r\n" % len(body)
        return (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nx-api-key: {self.key}\r\n".encode()
                + b"content-type: application/json\r\n" + headers + framing + b"\r\n" + body)

    def admin_request(self, method: str, path: str, *, body: bytes = b"", framing: bytes | None = None) -> bytes:
        if framing is None:
            framing = b"Content-Length: %d\r\n" % len(body)
        return (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n".encode()
                + b"content-type: application/json\r\n" + framing + b"\r\n" + body)

    def channel_failures(self) -> int:
        return self.admin("GET", f"/admin/channels/{self.channel_id}").json()["consecutive_failures"]

    def unexpected_stderr(self) -> list[str]:
        return [line for line in self.proc.stderr.splitlines() if any(bad in line for bad in UNEXPECTED_STDERR)]

    def assert_survived(self) -> None:
        assert healthz_ok(self.port), "the server stopped answering /healthz"
        assert self.proc.popen.poll() is None, "the gunicorn master exited"
        assert worker_pids(self.proc.popen.pid) == self.workers, "the worker was replaced"
        stderr = self.proc.stderr
        assert stderr.count("Booting worker with pid") == 1, stderr[-3000:]
        assert self.unexpected_stderr() == [], "\n".join(line[:600] for line in self.unexpected_stderr())


@pytest.fixture
def gunicorn(env, procs, upstream):
    served = serve_gunicorn(procs, env, workers=1, threads=16, LOG_LEVEL="info",
                            OCTORELAY_MAX_BODY_MB=str(LIMIT_MB))
    proc, port, admin = served.proc, served.port, served.admin
    channel = admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                                   models=["claude-*"])
    key = admin.create_key(name="hostile")["key"]
    SECRETS_USED.add(key)
    workers = wait_for_workers(proc)
    assert len(workers) == 1, workers
    return Gunicorn(port, proc, admin, key, channel["id"], upstream, workers)


@pytest.mark.slow
def test_gunicorn_header_attacks(gunicorn):
    g, problems = gunicorn, Problems()
    port = g.port
    bad_syntax = {
        "bare CR in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: 1\r\n\r\n",
        "bare LF in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\nX-Injected: 1\r\n\r\n",
        "bare LF line ends": b"GET /healthz HTTP/1.1\nHost: x\nX-Injected: 1\n\n",
        "NUL in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        "control char in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n",
        "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n X-Injected: 1\r\n\r\n",
        "space before colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n",
        "space in a name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: a\r\n\r\n",
        "CR in a name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\rA: a\r\n\r\n",
        "no colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Injected\r\n\r\n",
        "CRLF in the request line": b"GET /healthz\r\nX-Injected: 1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "lowercase method": b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "NUL in the method": b"GE\x00T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "NUL in the target": b"GET /healthz\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        "request line over the limit": b"GET /healthz?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "a 64 KB header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 65_536 + b"\r\n\r\n",
        "a 64 KB anthropic-beta": g.request("POST", "/v1/messages", body=SMALL_BODY,
                                            headers=b"anthropic-beta: " + b"b" * 65_536 + b"\r\n"),
        "300 headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(300))
                       + b"\r\n",
    }
    forwarded_before = len(g.upstream.requests)
    for where, data in bad_syntax.items():
        got = exchange(port, data, linger=0.2)
        problems.refused(got, where)
        problems.check(all("x-injected" not in r.headers for r in got), f"{where}: header injected")
        problems.check(healthz_ok(port), f"not serving after {where}")
    problems.check(len(g.upstream.requests) == forwarded_before, "a refused request reached the upstream")

    # percent-encoded CR/LF in the target must never become a response header (response splitting)
    for target in (b"/v1/models/a%0d%0aX-Injected:%201", b"/v1//models/a%0d%0aX-Injected:%201",
                   b"/nowhere%0d%0aSet-Cookie:%20a=1", b"/healthz//%0d%0aSet-Cookie:%20a=1"):
        data = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nx-api-key: " + g.key.encode() + b"\r\n\r\n"
        got = exchange(port, data)
        problems.check(len(got) == 1 and got[0].status < 500, f"{target!r}: {[(r.status, r.body[:100]) for r in got]}")
        problems.check(all(not {"x-injected", "set-cookie"} & set(r.headers) for r in got),
                       f"{target!r}: header injected {[r.headers for r in got]}")

    # a 16 KB anthropic-beta (Claude Code sends long ones) is accepted and forwarded intact
    beta = ",".join(["interleaved-thinking-2025-05-14"] * 520)[:16_384].strip(",")
    got = exchange(port, g.request("POST", "/v1/messages", body=SMALL_BODY,
                                   headers=f"anthropic-beta: {beta}\r\n".encode()))
    if problems.check([r.status for r in got] == [200],
                      f"16 KB anthropic-beta: {[(r.status, r.body[:200]) for r in got]}"):
        problems.check(g.upstream.requests[-1].headers["anthropic-beta"] == beta, "16 KB anthropic-beta altered")

    # obs-text (bytes 0x80-0xFF) passes gunicorn; forwarded, it is the client's problem, not the channel's
    for name in (b"anthropic-beta", b"anthropic-version"):
        for value in (b"\xa0x", b"\x85x"):
            for _ in range(3):  # three failures in a row would put the only channel into a cooldown
                got = exchange(port, g.request("POST", "/v1/messages", body=SMALL_BODY,
                                               headers=name + b": " + value + b"\r\n"))
                ok = len(got) == 1 and (got[0].status == 200 or 400 <= got[0].status < 500)
                problems.check(ok, f"{name.decode()}: {value!r} -> {[(r.status, r.body[:160]) for r in got]}")
            problems.check(g.channel_failures() == 0, f"{name.decode()}: {value!r} counted against the channel")
    problems.report()
    g.assert_survived()


@pytest.mark.slow
def test_gunicorn_body_framing_attacks(gunicorn):
    """Bodies over the limit sent slowly, request smuggling, broken chunked framing."""
    g, problems = gunicorn, Problems()
    port = g.port
    forwarded_before = len(g.upstream.requests)

    # over the limit, sent slowly: refused (413) before the client has finished sending
    total = 10 * 1024 * 1024
    piece = b"x" * 1024
    chunk = b"400\r\n" + piece + b"\r\n"
    for where, head, framed in (
            ("content-length", g.request("POST", "/v1/messages", framing=b"Content-Length: %d\r\n" % total), piece),
            ("chunked", g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n"), chunk),
            ("count_tokens, chunked", g.request("POST", "/v1/messages/count_tokens",
                                                framing=b"Transfer-Encoding: chunked\r\n"), chunk),
            ("admin, content-length", g.admin_request("POST", "/admin/keys",
                                                      framing=b"Content-Length: %d\r\n" % total), piece)):
        conn = RawConn(port)
        try:
            conn.send(head)
            sent, deadline = 0, time.monotonic() + 15
            while sent < total and time.monotonic() < deadline and not conn.readable(0.002):
                if not conn.send(framed):
                    break
                sent += len(piece)
            got = conn.responses(timeout=5, linger=0)
        finally:
            conn.close()
        problems.check(sent < total, f"{where}: all {total} bytes were taken before an answer")
        problems.check(sent <= 4 * LIMIT, f"{where}: {sent} bytes taken before the answer (limit {LIMIT})")
        problems.refused(got, f"oversized, {where}", status=413)
        problems.check(healthz_ok(port), f"not serving after oversized, {where}")

    # request smuggling: Transfer-Encoding together with Content-Length (and relatives)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    for where, framing, body in (
            ("CL then TE", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + smuggled),
            ("TE then CL", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
             b"5\r\nhello\r\n0\r\n\r\n" + smuggled),
            ("TE list", b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + smuggled),
            ("TE twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + smuggled),
            ("TE not chunked", b"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + smuggled),
            ("TE xchunked", b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + smuggled),
            ("TE with a tab", b"Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n", b"0\r\n\r\n" + smuggled),
            ("two lengths", b"Content-Length: 5\r\nContent-Length: 0\r\n", b"hello" + smuggled),
            ("length list", b"Content-Length: 0, 5\r\n", b"hello" + smuggled),
            ("signed length", b"Content-Length: +0\r\n", smuggled),
            ("negative length", b"Content-Length: -1\r\n", smuggled),
            ("hex length", b"Content-Length: 0x0\r\n", smuggled)):
        got = exchange(port, g.request("POST", "/v1/messages", framing=framing, body=body), linger=0.3)
        problems.refused(got, f"smuggling, {where}", also=(501,))  # 501: a transfer coding gunicorn lacks
    http10 = (b"POST /v1/messages HTTP/1.0\r\nHost: x\r\nx-api-key: " + g.key.encode()
              + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
    problems.refused(exchange(port, http10, linger=0.3), "smuggling, chunked HTTP/1.0")
    problems.check('"route":"/smuggled"' not in g.proc.stderr, "a smuggled request was processed")
    problems.check(len(g.upstream.requests) == forwarded_before, "a refused request reached the upstream")

    # broken chunked framing is the client's error: a 400 -- from gunicorn, or in Anthropic's shape --
    # on the client API and the admin API, never a 500 with a traceback
    for where, chunks in (("not hex", b"zz\r\nabc\r\n0\r\n\r\n"), ("negative", b"-1\r\nabc\r\n0\r\n\r\n"),
                          ("0x prefix", b"0x3\r\nabc\r\n0\r\n\r\n"),
                          ("underscore", b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
                          ("space inside", b"1 0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
                          ("data longer than its size", b"3\r\nabcdef\r\n0\r\n\r\n"),
                          ("no CRLF after the data", b"3\r\nabcXY0\r\n\r\n"),
                          ("NUL in the size", b"3\x00\r\nabc\r\n0\r\n\r\n")):
        for route, request in (
                ("/v1/messages", g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n",
                                           body=chunks)),
                ("/admin/keys", g.admin_request("POST", "/admin/keys", framing=b"Transfer-Encoding: chunked\r\n",
                                                body=chunks))):
            problems.refused(exchange(port, request, linger=0.3), f"chunked, {where}, {route}", status=400)
        problems.check(healthz_ok(port), f"not serving after chunked, {where}")
    problems.check(len(g.upstream.requests) == forwarded_before, "a body with broken framing reached the upstream")
    # still a relay: a normal request afterwards succeeds, with a chunked body too
    for framing, body in ((None, SMALL_BODY),
                          (b"Transfer-Encoding: chunked\r\n",
                           b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMALL_BODY), SMALL_BODY))):
        got = exchange(port, g.request("POST", "/v1/messages", framing=framing, body=body))
        if problems.check([r.status for r in got] == [200],
                          f"a normal request: {[(r.status, r.body[:200]) for r in got]}"):
            problems.check(g.upstream.requests[-1].body == SMALL_BODY, "a normal body arrived altered")
    problems.report()
    g.assert_survived()


@pytest.mark.slow
def test_gunicorn_bodies_that_never_finish(gunicorn):
    """No answer is owed while a client may still send its body, but the server keeps serving
    others meanwhile, and a client giving up mid-body is not a server error."""
    g, problems = gunicorn, Problems()
    port = g.port
    stalled = {
        "content-length, 1 of 100 bytes": g.request("POST", "/v1/messages", framing=b"Content-Length: 100\r\n",
                                                    body=b"{"),
        "chunked, half a chunk": g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n",
                                           body=b"10\r\n{\"model\""),
        "chunked, between chunks": g.request("POST", "/v1/messages/count_tokens",
                                             framing=b"Transfer-Encoding: chunked\r\n", body=b"1\r\n{\r\n"),
        "chunk size 2**96": g.request("POST", "/v1/messages", framing=b"Transfer-Encoding: chunked\r\n",
                                      body=b"ffffffffffffffffffffffff\r\nabc\r\n"),
        "admin, content-length": g.admin_request("POST", "/admin/keys", framing=b"Content-Length: 100\r\n",
                                                 body=b"{"),
        "admin, chunked": g.admin_request("POST", "/admin/channels", framing=b"Transfer-Encoding: chunked\r\n",
                                          body=b"10\r\n{"),
        "headers never end": b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + g.key.encode() + b"\r\n",
    }
    conns = {}
    try:
        for where, data in stalled.items():
            conns[where] = conn = RawConn(port)
            conn.send(data)
        time.sleep(1.0)
        for where, conn in conns.items():
            for answer in conn.responses(timeout=0.2, linger=0):  # an early refusal is fine, a 5xx is not
                problems.check(400 <= answer.status < 500, f"{where}: {answer.status} {answer.body[:200]!r}")
        started = time.monotonic()
        problems.check(healthz_ok(port), "the server stopped serving while requests were stalled")
        problems.check(time.monotonic() - started < 2.0, "/healthz was slow while requests were stalled")
    finally:
        for conn in conns.values():
            conn.close()  # the client gives up
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and not g.unexpected_stderr():
        time.sleep(0.1)  # give the server time to notice (and to log, if it logs an error)
    problems.check(g.unexpected_stderr() == [], "a client giving up mid-body was logged as a server error:\n"
                   + "\n".join(line[:400] for line in g.unexpected_stderr()))
    problems.check(healthz_ok(port), "not serving after the stalled clients left")
    problems.check(g.upstream.requests == [], "an unfinished body reached the upstream")
    got = exchange(port, g.request("POST", "/v1/messages", body=SMALL_BODY))
    problems.check([r.status for r in got] == [200], f"a normal request: {[(r.status, r.body[:200]) for r in got]}")
    problems.report()
    g.assert_survived()
