"""Running `octorelay ...` in-process with click's CliRunner, cleaning up what each run leaves."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from flask.globals import _cv_app

from app.cli import main
from app.db import db

# Variables that would change what octorelay sees if the developer's shell happens to set them.
OUTSIDE_VARS = ("DATABASE_URL", "REDIS_URL", "OCTORELAY_ADMIN_TOKEN", "OCTORELAY_SECRET_KEY",
                "OCTORELAY_WORKER_CLASS", "OCTORELAY_THREADS", "OCTORELAY_MAX_BODY_MB",
                "OCTORELAY_MAX_ATTEMPTS", "OCTORELAY_KEY_CACHE_TTL", "WEB_CONCURRENCY", "PORT",
                "ANTHROPIC_API_KEY", "LOG_LEVEL", "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS",
                "OCTORELAY_LIMITS_FAIL_OPEN", "OCTORELAY_LEASE_TTL", "OCTORELAY_SPOOL_DIR")


def release():
    """Pop the app contexts the CLI pushed and close its pooled connections."""
    while (ctx := _cv_app.get(None)) is not None:
        ctx.pop()
    database = db.obj
    if database is not None:
        if hasattr(database, "close_all"):
            database.close_all()
        elif not database.is_closed():
            database.close()


class Cli:
    """Runs `octorelay ARGS` in-process."""

    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None):
        try:
            return self.runner.invoke(main, list(args), input=input)
        finally:
            release()

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self(*args, input=input)
        assert result.exit_code == 0 and result.exception is None, (
            args, result.exit_code, result.output, result.exc_info)
        return result.stdout

    def json(self, *args: str, input: str | None = None):
        return json.loads(self.ok(*args, "--json", input=input))

    def fail(self, *args: str, input: str | None = None) -> str:
        """Exits non-zero with exactly one stderr line `octorelay: error: ...`; returns that line."""
        result = self(*args, input=input)
        assert result.exit_code != 0, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exc_info)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("octorelay: error: "), lines
        assert "Traceback" not in result.output
        return lines[0]


@pytest.fixture
def runner(env, monkeypatch):
    """A Cli whose environment is exactly the `env` fixture's; the DB is not migrated yet."""
    for name in OUTSIDE_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield Cli()
    release()
