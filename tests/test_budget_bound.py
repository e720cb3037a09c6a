"""A budget's overshoot is bounded however the upstream bills (issue 21): two instances on one
database and one Redis, 100 concurrent requests on a $0.10 key whose upstream reports 50,000 input
tokens for a small body. Reservations never add up past what is left, so at most
floor(budget / reservation) requests are in flight, and the key overspends at most their real
cost beyond their reservations."""
import contextlib
import json
import threading
import time

import pytest
import requests

from app import create_app
from app.adaptors import estimate_tokens
from app.db import db, upgrade
from app.state import services
from tests.support.admin import AdminClient
from tests.support.app import anthropic_channel, serving
from tests.support.bodies import messages_body
from tests.support.upstream import anthropic_message, hang_answer, json_answer

pytestmark = pytest.mark.slow

BODY = messages_body()
BUDGET_NANOS = 100_000_000  # $0.10
REAL = 50_000 * 3000 + 100 * 15000  # what the upstream bills each request: $0.1515 (sonnet: $3 in, $15 out)


def test_the_ten_cent_key_stays_within_the_stated_bound(env, upstream, redis_url):
    apps = [create_app({**env, "REDIS_URL": redis_url}) for _ in range(2)]
    upgrade(db.obj)
    with contextlib.ExitStack() as stack:
        stack.callback(db.obj.close_all)
        for app in apps:
            stack.callback(services(app).close)
        bases = [stack.enter_context(serving(app)) for app in apps]
        admin = AdminClient(apps[0].test_client())
        anthropic_channel(admin, upstream)
        key = admin.create_key(name="ten-cents", budget_usd=BUDGET_NANOS / 1e9)
        upstream.set_default(lambda request: hang_answer(0.5, then=json_answer(anthropic_message(
            usage={"input_tokens": 50_000, "output_tokens": 100}))))
        raw = json.dumps(BODY).encode()
        reservation = estimate_tokens(len(raw)) * 6000 + 100 * 15000  # dearest input rate ($6: 1-hour write)
        results, lock = [], threading.Lock()

        def one(n):
            base = bases[n % 2]
            deadline = time.monotonic() + 20
            while True:
                resp = requests.post(f"{base}/v1/messages", data=raw, timeout=30,
                                     headers={"x-api-key": key["key"], "content-type": "application/json"})
                if resp.status_code != 429 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            with lock:
                results.append(resp.status_code)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        for app in apps:
            services(app).relay.flush(10)
        admitted = results.count(200)
        most_in_flight = BUDGET_NANOS // reservation
        used = round(admin.get(f"/admin/keys/{key['id']}").get_json()["used_usd"] * 1e9)
        bound = BUDGET_NANOS + most_in_flight * (REAL - reservation)
        assert len(results) == 100 and set(results) <= {200, 402}, results
        assert 1 <= admitted <= most_in_flight, (admitted, most_in_flight)
        assert used == admitted * REAL
        assert used <= bound, (used / 1e9, bound / 1e9)
        print(f"admitted {admitted} of 100 (at most {most_in_flight} in flight); used ${used / 1e9:.4f}; "
              f"bound ${bound / 1e9:.4f}")
