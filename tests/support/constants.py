"""The fixed secrets and canaries of the test suite, and the backends it runs on.

Every secret a test uses goes into SECRETS_USED: the session's octorelay logs must contain none
of them (tests/conftest.py, secret_audit)."""
from __future__ import annotations

import os

ADMIN_TOKEN = "test-admin-token-9f2c1b-7e4a-4d2b-a8c3-51f0"  # 32+ characters, as required
SECRET_KEY = "q2mS6yQ7n5bH0uF8YJwHk0j3QvZr2m1Ck9yXG1p4e6U="  # a fixed Fernet key for tests
PROMPT_CANARY = "PROMPT-CANARY-7d1f"  # prompt and answer text some tests send: never in any log
ANSWER_CANARY = "ANSWER-CANARY-93ab"
UPSTREAM_KEY = "sk-ant-api03-upstream-test-key-5f1e2d3c4b5a69788796"
PG_URL = os.environ.get("OCTORELAY_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("OCTORELAY_TEST_REDIS_URL")

# Every secret and canary the suite uses; the session's octorelay logs must contain none of them.
SECRETS_USED: set[str] = {ADMIN_TOKEN, SECRET_KEY, PROMPT_CANARY, ANSWER_CANARY, UPSTREAM_KEY}
