"""The settlement writer: rows queued on the hot path, written in batches after the response."""
import threading
import time

from flask.testing import FlaskClient

from app.models import ApiKey, RequestLog
from app.services.writer import SettlementWriter
from app.state import services
from tests.support.app import anthropic_channel
from tests.support.bodies import messages_body
from tests.support.upstream import anthropic_message, json_answer

BODY = messages_body("claude-sonnet-4-5", 64, "Hi")


class Recorder:
    """A write_batch that records batches and can be held shut to let a queue build up."""

    def __init__(self):
        self.batches: list[list[dict]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, rows):
        self.entered.set()
        assert self.gate.wait(10)
        self.batches.append(list(rows))
        return [row["n"] * 10 for row in rows]


def test_rows_queued_while_a_batch_is_written_go_in_one_next_batch():
    recorder = Recorder()
    writer = SettlementWriter(recorder)
    done: list[tuple[int, int]] = []
    recorder.gate.clear()
    writer.submit({"n": 0}, lambda cost: done.append((0, cost)))
    assert recorder.entered.wait(5)  # the first batch is being written, and held
    for n in range(1, 101):
        writer.submit({"n": n}, lambda cost, n=n: done.append((n, cost)))
    recorder.gate.set()
    assert writer.flush(5)
    assert [len(b) for b in recorder.batches] == [1, 100]
    assert done == [(n, n * 10) for n in range(101)]  # each row's own cost, in order
    writer.close()


def test_close_writes_what_is_still_queued():
    recorder = Recorder()
    writer = SettlementWriter(recorder)
    recorder.gate.clear()
    writer.submit({"n": 1})
    assert recorder.entered.wait(5)
    writer.submit({"n": 2})
    writer.submit({"n": 3})
    threading.Timer(0.2, recorder.gate.set).start()
    writer.close()
    assert sorted(row["n"] for batch in recorder.batches for row in batch) == [1, 2, 3]
    writer.submit({"n": 4})  # after close: written in the caller's thread
    assert recorder.batches[-1] == [{"n": 4}]


def test_a_failing_callback_or_batch_does_not_stop_the_writer():
    calls = []

    def broken_batch(rows):
        if rows[0]["n"] == 1:
            raise RuntimeError("bug")
        return [7] * len(rows)

    writer = SettlementWriter(broken_batch)
    writer.submit({"n": 1}, lambda cost: calls.append(("a", cost)))
    assert writer.flush(5)
    writer.submit({"n": 2}, lambda cost: 1 / 0)
    writer.submit({"n": 3}, lambda cost: calls.append(("b", cost)))
    assert writer.flush(5)
    assert calls == [("a", 0), ("b", 7)]
    writer.close()


def test_the_answer_does_not_wait_for_the_database(app, admin, upstream):
    """The client has its answer while the database's write lock is held elsewhere; the row
    and charge follow once it is free."""
    from app.db import db

    anthropic_channel(admin, upstream)
    upstream.set_default(json_answer(anthropic_message(usage={"input_tokens": 10, "output_tokens": 5})))
    key = admin.create_key(name="k")
    client = FlaskClient(app)  # a plain client: no flush after each request
    headers = {"x-api-key": key["key"]}
    assert client.post("/v1/messages", json=BODY, headers=headers).status_code == 200  # warm caches
    assert services(app).relay.flush(5)

    locked, release = threading.Event(), threading.Event()

    def hold_write_lock():
        with db.connection_context(), db.atomic():
            ApiKey.update(name="held").where(ApiKey.id == key["id"]).execute()  # row lock / write lock
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_write_lock, daemon=True)
    holder.start()
    assert locked.wait(5)
    try:
        started = time.monotonic()
        resp = client.post("/v1/messages", json=BODY, headers=headers)
        answered_in = time.monotonic() - started
        assert resp.status_code == 200
        assert RequestLog.select().count() == 1  # its row is not there yet: the lock is held
    finally:
        release.set()
        holder.join(10)
    assert answered_in < 5  # not stuck behind the lock (held for up to 10 s)
    assert services(app).relay.flush(10)
    assert RequestLog.select().count() == 2
    assert ApiKey.get_by_id(key["id"]).used_tokens == 30


def test_a_batch_longer_than_one_insert_writes_every_row_once(app, admin):
    """On PostgreSQL rows go LOG_CHUNK to a statement: a batch of 2.5 chunks is every row, once,
    and one charge of their sum (on SQLite the same batch is one executemany)."""
    from app.services.accounting import LOG_CHUNK, RequestRecord
    from app.wire.usage import Usage

    key = admin.create_key(name="k")
    ledger = services(app).relay.ledger
    rows: list[dict] = []

    class Capture:
        def submit(self, row, done=None):
            rows.append(row)

    writer, ledger.writer = ledger.writer, Capture()
    try:
        count = LOG_CHUNK * 2 + LOG_CHUNK // 2
        for i in range(count):
            ledger.settle(RequestRecord(request_id=f"req_chunk_{i:04d}", key_id=key["id"], model="claude-sonnet-4-5",
                                        stream=False, status=200, usage=Usage(input_tokens=i, output_tokens=1)))
    finally:
        ledger.writer = writer
    costs = ledger.write_batch(rows)
    assert len(costs) == count and all(cost > 0 for cost in costs)
    logged = {row.request_id: row.input_tokens for row in RequestLog.select()}
    assert logged == {f"req_chunk_{i:04d}": i for i in range(count)}
    assert ApiKey.get_by_id(key["id"]).used_tokens == sum(range(count)) + count
    assert ApiKey.get_by_id(key["id"]).used_nanos == sum(costs)


def test_a_batch_gathers_rows_for_its_window_and_a_flush_or_close_ends_it_at_once():
    recorder = Recorder()
    writer = SettlementWriter(recorder, window_s=30.0)
    writer.submit({"n": 1})
    time.sleep(0.2)  # well after the first row: without the window it would be written alone by now
    writer.submit({"n": 2})
    assert writer.flush(5)  # True only if the flush did not wait out the 30 s window
    assert recorder.batches == [[{"n": 1}, {"n": 2}]]
    writer.submit({"n": 3})
    writer.close(timeout=5)
    assert recorder.batches[-1] == [{"n": 3}]
    assert writer._thread is not None and not writer._thread.is_alive()


def test_a_writer_thread_that_died_is_started_again_by_the_next_row():
    class Fatal(BaseException):  # not an Exception: the writer's guards let it end the thread
        pass

    written: list[int] = []

    def batch(rows):
        if rows[0]["n"] == 1:
            raise Fatal()
        written.extend(row["n"] for row in rows)
        return [0] * len(rows)

    writer = SettlementWriter(batch, window_s=0.0)
    first = threading.excepthook
    threading.excepthook = lambda args: None  # the dying thread's traceback is expected here
    try:
        writer.submit({"n": 1})
        dead = writer._thread
        assert dead is not None
        dead.join(5)
        assert not dead.is_alive()
    finally:
        threading.excepthook = first
    writer.submit({"n": 2})
    assert writer._thread is not dead and writer.flush(5)
    assert written == [2]
    writer.close()
