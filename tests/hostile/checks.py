"""What every hostile-input answer must be: a success or a well-formed Anthropic error (never a
5xx), checked by `check_error`; `Problems` collects every failing case of a battery before failing;
`examples(n)`: the Hypothesis settings the properties share."""
from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, Phase, settings

from tests.support.raw_http import RawResponse


def examples(n: int):
    """Hypothesis settings for a property that reuses one app (function-scoped fixtures)."""
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    report_multiple_bugs=False,
                    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# The status -> Anthropic error type table of docs/api.md, Errors, for the errors a client can cause.
ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}
REQUEST_ID = re.compile(r"req_[A-Za-z0-9]{24}")


def check_error(status: int, headers, body: bytes, *, context: str = "") -> dict:
    """Anthropic's error shape, a 4xx, the status's error type, the body's id = the header's id."""
    where = f"{context}: {status} {body[:300]!r}"
    assert 400 <= status < 500, where
    assert (headers.get("content-type") or "").split(";")[0].strip() == "application/json", where
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and set(parsed) == {"type", "error", "request_id"}, where
    assert parsed["type"] == "error", where
    error = parsed["error"]
    assert isinstance(error, dict) and set(error) >= {"type", "message"}, where
    assert error["type"] == ERROR_TYPE.get(status, "invalid_request_error"), where
    assert isinstance(error["message"], str) and error["message"], where
    assert REQUEST_ID.fullmatch(parsed["request_id"]), where
    assert headers.get("request-id") == parsed["request_id"], where
    return parsed


def check_error_response(resp, *, context: str = "") -> dict:
    return check_error(resp.status_code, resp.headers, resp.get_data(), context=context)


class Problems(list):
    """Findings collected over a battery of cases, all reported together at the end (one bug
    does not hide the next, and one app serves the whole battery)."""

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok

    def refused(self, responses: list[RawResponse], where: str, *, status: int | None = None,
                also: tuple = ()) -> None:
        """Exactly one answer, a 4xx (`status` when given, or one of `also` from gunicorn itself);
        Anthropic-shaped when the app wrote it."""
        summary = [(r.status, r.body[:160]) for r in responses]
        if not self.check(len(responses) == 1, f"{where}: {len(responses)} responses {summary}"):
            return
        answer = responses[0]
        expected = (400 <= answer.status < 500 and status in (None, answer.status)) or (
            answer.status in also and "request-id" not in answer.headers)
        if not self.check(expected, f"{where}: answered {answer.status} {answer.body[:200]!r}"):
            return
        if "request-id" in answer.headers:  # written by octorelay, not by gunicorn itself
            try:
                check_error(answer.status, answer.headers, answer.body, context=where)
            except AssertionError as error:
                self.append(str(error))

    def report(self) -> None:
        assert not self, f"{len(self)} problem(s):\n" + "\n".join(self)

    def run(self, where: str, check, *args, **kwargs):
        """Run an asserting `check`; an AssertionError becomes a problem named `where`."""
        try:
            return check(*args, **kwargs)
        except AssertionError as error:
            self.append(f"{where}: {str(error)[:600]}")
