"""The `octorelay` command in-process (click's CliRunner): migrations, keys, channels, prices, secret, bad config."""
from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

UPSTREAM_KEY = "sk-ant-api03-CLITESTUPSTREAMSECRET-7Hq2ZxW9vLm4Np8R"


@pytest.fixture
def cli(runner):
    """A Cli on a migrated database."""
    runner.ok("db", "upgrade")
    return runner


def create_key(cli, *extra: str) -> dict:
    return cli.json("keys", "create", "--name", "k", *extra)


# db -----------------------------------------------------------------------------

def test_db_upgrade_applies_then_is_idempotent(runner):
    first = runner.ok("db", "upgrade")
    assert "applied 0001_initial" in first
    assert "up to date" not in first
    second = runner.ok("db", "upgrade")
    assert "database is up to date" in second
    assert "applied" not in second
    assert "database is up to date" in runner.ok("db", "status")


# keys ---------------------------------------------------------------------------

def test_keys_create_json_has_the_admin_api_fields(cli, admin):
    created = cli.json("keys", "create", "--name", "x")
    assert created["key"].startswith("sk-octo-")
    assert len(created["key"]) > 30
    assert created["key"].startswith(created["key_prefix"])
    assert created["name"] == "x"
    assert created["status"] == "active"
    assert created["used_usd"] == 0 and created["used_tokens"] == 0

    from_api = admin.create_key(name="y")
    assert set(created) == set(from_api)

    # the key is real: the client API takes it
    resp = admin.client.get("/v1/models", headers={"x-api-key": created["key"]})
    assert resp.status_code == 200, resp.get_data(as_text=True)

    # and it is never shown again
    shown = cli.json("keys", "show", str(created["id"]))
    assert shown == {k: v for k, v in created.items() if k != "key"}
    secret_part = created["key"][len(created["key_prefix"]):]
    for args in (("keys", "list"), ("keys", "list", "--json"), ("keys", "show", str(created["id"]))):
        assert secret_part not in cli.ok(*args)


def test_keys_create_text_output_shows_the_key_once(cli):
    out = cli.ok("keys", "create", "--name", "plain")
    keys = [word for word in out.split() if word.startswith("sk-octo-")]
    assert len(keys) == 1 and len(keys[0]) > 30, out


def test_keys_list_show_update_revoke(cli):
    key = create_key(cli, "--budget-usd", "10")
    key_id = str(key["id"])
    other = cli.json("keys", "create", "--name", "other")

    table = cli.ok("keys", "list")
    assert "key_prefix" in table.splitlines()[0]
    assert key["key_prefix"] in table and other["key_prefix"] in table
    listed = cli.json("keys", "list")["data"]
    assert [k["id"] for k in listed] == [key["id"], other["id"]]
    assert all("key" not in k for k in listed)

    assert f"{key['id']}" in cli.ok("keys", "show", key_id)
    assert cli.json("keys", "show", key_id)["budget_usd"] == 10.0

    updated = cli.json("keys", "update", key_id, "--rpm", "5", "--model", "claude-*")
    assert updated["rpm"] == 5
    assert updated["models"] == ["claude-*"]
    assert updated["budget_usd"] == 10.0  # untouched fields stay

    updated = cli.json("keys", "update", key_id, "--model", "claude-sonnet-*", "--model", "claude-haiku-*",
                       "--tpm", "1000", "--expires-at", "2999-01-02T03:04:05Z", "--name", "renamed")
    assert updated["models"] == ["claude-sonnet-*", "claude-haiku-*"]
    assert updated["tpm"] == 1000 and updated["rpm"] == 5
    assert updated["expires_at"] == "2999-01-02T03:04:05Z"
    assert updated["name"] == "renamed"

    cleared = cli.json("keys", "update", key_id, "--budget-usd", "none", "--expires-at", "none")
    assert cleared["budget_usd"] is None
    assert cleared["expires_at"] is None
    assert cli.json("keys", "show", key_id)["budget_usd"] is None

    assert cli.json("keys", "update", key_id, "--disable")["status"] == "disabled"
    assert cli.json("keys", "update", key_id, "--enable")["status"] == "active"

    revoked = cli.json("keys", "revoke", key_id)
    assert revoked["status"] == "revoked"
    assert revoked["revoked_at"] is not None
    assert cli.json("keys", "show", key_id)["status"] == "revoked"
    assert cli.json("keys", "show", str(other["id"]))["status"] == "active"
    line = cli.fail("keys", "update", key_id, "--rpm", "7")
    assert "revoked" in line


def test_keys_budget_period_is_set_shown_and_cleared(cli):
    from app.models import utcnow
    from app.periods import resets_at
    from app.timefmt import iso

    before = utcnow()
    key = create_key(cli, "--budget-usd", "50", "--budget-period", "month")
    assert key["budget_period"] == "month"
    assert key["budget_resets_at"] in {iso(resets_at("month", t)) for t in (before, utcnow())}
    table = cli.ok("keys", "list").splitlines()
    assert "budget_period" in table[0] and "budget_resets_at" in table[0]
    assert "month" in table[1] and key["budget_resets_at"] in table[1]
    daily = cli.json("keys", "update", str(key["id"]), "--budget-period", "day")
    assert daily["budget_period"] == "day" and daily["budget_resets_at"].endswith("T00:00:00Z")
    cleared = cli.json("keys", "update", str(key["id"]), "--budget-period", "none")
    assert cleared["budget_period"] is None and cleared["budget_resets_at"] is None
    assert cleared["budget_usd"] == 50.0
    assert "budget_period: Must be one of: day, week, month" in cli.fail(
        "keys", "update", str(key["id"]), "--budget-period", "year")


@pytest.mark.parametrize("args, field", [
    (["--rpm", "-3"], "rpm"),
    (["--rpm", "0"], "rpm"),
    (["--tpm", "1.5"], "tpm"),
    (["--max-concurrency", "0"], "max_concurrency"),
    (["--token-quota", "-1"], "token_quota"),
    (["--budget-usd", "-5"], "budget_usd"),
    (["--budget-usd", "lots"], "budget"),
    (["--expires-at", "notadate"], "expires_at"),
    (["--name", ""], "name"),
])
def test_keys_update_rejects_invalid_input_and_changes_nothing(cli, args, field):
    key = create_key(cli, "--rpm", "9", "--budget-usd", "3")
    before = cli.json("keys", "show", str(key["id"]))
    line = cli.fail("keys", "update", str(key["id"]), *args)
    assert field in line, line
    assert cli.json("keys", "show", str(key["id"])) == before


@pytest.mark.parametrize("args, field", [
    (["--rpm", "-3"], "rpm"),
    (["--expires-at", "notadate"], "expires_at"),
    (["--budget-usd", "lots"], "budget"),
])
def test_keys_create_rejects_invalid_input_and_creates_nothing(cli, args, field):
    line = cli.fail("keys", "create", "--name", "bad", *args)
    assert field in line, line
    assert cli.json("keys", "list")["data"] == []


@pytest.mark.parametrize("args", [
    ["keys", "show", "4242"],
    ["keys", "update", "4242", "--rpm", "5"],
    ["keys", "revoke", "4242"],
])
def test_unknown_key_id_fails_cleanly(cli, args):
    key = create_key(cli)
    before = cli.json("keys", "list")
    line = cli.fail(*args)
    assert "4242" in line
    after = cli.json("keys", "list")
    assert after == before and after["data"][0]["id"] == key["id"]


# channels -------------------------------------------------------------------------

def test_channels_add_list_update_remove(cli, admin):
    out = cli.ok("channels", "add", "--name", "a", "--type", "anthropic", "--api-key", UPSTREAM_KEY,
                 "--model", "claude-*", "--map", "claude-x=claude-y", "--json")
    assert UPSTREAM_KEY not in out
    channel = json.loads(out)
    assert channel["name"] == "a" and channel["type"] == "anthropic"
    assert channel["base_url"] == "https://api.anthropic.com"
    assert channel["models"] == ["claude-*"]
    assert channel["model_map"] == {"claude-x": "claude-y"}
    assert channel["api_key"] and channel["api_key"] != UPSTREAM_KEY
    assert "…" in channel["api_key"]
    assert "CLITESTUPSTREAMSECRET" not in channel["api_key"]
    assert channel["enabled"] is True
    assert channel["consecutive_failures"] == 0 and "cooldown_until" in channel

    from_api = admin.create_channel(name="via-api")
    assert set(channel) == set(from_api)

    for args in (("channels", "list"), ("channels", "list", "--json")):
        listing = cli.ok(*args)
        assert UPSTREAM_KEY not in listing and "CLITESTUPSTREAMSECRET" not in listing
    listed = cli.json("channels", "list")["data"]
    assert [c["name"] for c in listed] == ["a", "via-api"]
    assert listed[0] == channel

    cid = str(channel["id"])
    updated = cli.json("channels", "update", cid, "--priority", "5", "--weight", "3", "--timeout", "30",
                       "--disable", "--base-url", "https://relay.example.com/")
    assert updated["priority"] == 5 and updated["weight"] == 3
    assert updated["timeout_s"] == 30.0
    assert updated["enabled"] is False
    assert updated["base_url"] == "https://relay.example.com"
    assert updated["api_key"] == channel["api_key"]  # untouched
    assert updated["model_map"] == {"claude-x": "claude-y"}

    new_key = "sk-ant-api03-ROTATEDUPSTREAMSECRET-Lx83"
    rotated = cli.ok("channels", "update", cid, "--api-key", "-", "--json", input=new_key + "\n")
    assert new_key not in rotated
    rotated = json.loads(rotated)
    assert rotated["api_key"] != channel["api_key"]
    assert rotated["api_key"].endswith(new_key[-3:])

    assert "removed" in cli.ok("channels", "remove", cid)
    assert [c["name"] for c in cli.json("channels", "list")["data"]] == ["via-api"]
    assert cid in cli.fail("channels", "remove", cid)


@pytest.mark.parametrize("args, field", [
    (["--type", "bogus", "--model", "claude-*"], "type"),
    (["--type", "mock"], "models"),
    (["--type", "openai", "--model", "gpt-*"], "base_url"),
    (["--type", "openai", "--model", "gpt-*", "--base-url", "not a url"], "base_url"),
    (["--type", "mock", "--model", "claude-*", "--map", "no-equals-sign"], "--map"),
    (["--type", "mock", "--model", "claude-*", "--weight", "0"], "weight"),
])
def test_channels_add_rejects_invalid_input_and_creates_nothing(cli, args, field):
    line = cli.fail("channels", "add", "--name", "bad", *args)
    assert field in line, line
    assert cli.json("channels", "list")["data"] == []


def test_channels_update_invalid_input_changes_nothing(cli):
    channel = cli.json("channels", "add", "--name", "m", "--type", "mock", "--model", "claude-*")
    cid = str(channel["id"])
    assert "type" in cli.fail("channels", "update", cid, "--type", "bogus")
    assert "weight" in cli.fail("channels", "update", cid, "--weight", "-1")
    assert "4242" in cli.fail("channels", "update", "4242", "--priority", "1")
    assert cli.json("channels", "list")["data"] == [channel]


def test_channel_names_are_unique(cli):
    cli.ok("channels", "add", "--name", "dup", "--type", "mock", "--model", "claude-*")
    assert "name" in cli.fail("channels", "add", "--name", "dup", "--type", "mock", "--model", "claude-*")
    assert len(cli.json("channels", "list")["data"]) == 1


# prices -----------------------------------------------------------------------------

def test_prices_lists_seeded_prices(cli, admin):
    data = cli.json("prices")["data"]
    by_model = {p["model"]: p for p in data}
    assert by_model["claude-sonnet-4-5"] == {
        "model": "claude-sonnet-4-5", "input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_write_1h": 6.0,
        "cache_read": 0.3, "web_search_per_1k": 10.0,
        "long_context": {"threshold_tokens": 200000, "input": 6.0, "output": 22.5, "cache_write": 7.5,
                         "cache_write_1h": 12.0, "cache_read": 0.6}}
    assert data == admin.get("/admin/prices").get_json()["data"]
    table = cli.ok("prices")
    assert table.splitlines()[0].split() == ["model", "input", "output", "cache_write", "cache_write_1h",
                                             "cache_read", "web_search_per_1k"]
    assert any(line.split() == ["claude-sonnet-4-5", "3.0", "15.0", "3.75", "6.0", "0.3", "10.0"]
               for line in table.splitlines())


def test_prices_set_creates_then_replaces(cli):
    price = cli.json("prices", "set", "m", "--input", "1", "--output", "2",
                     "--cache-write", "1.25", "--cache-read", "0.1")
    assert price == {"model": "m", "input": 1.0, "output": 2.0, "cache_write": 1.25, "cache_write_1h": 2.0,
                     "cache_read": 0.1, "web_search_per_1k": None, "long_context": None}
    assert price in cli.json("prices")["data"]

    replaced = cli.json("prices", "set", "m*", "--input", "4", "--output", "8", "--cache-write", "5",
                        "--cache-write-1h", "7", "--cache-read", "0.4", "--web-search-per-1k", "10",
                        "--long-context", '{"threshold_tokens": 1000, "input": 8, "output": 12, '
                                          '"cache_write": 10, "cache_read": 0.8}')
    assert replaced == {"model": "m*", "input": 4.0, "output": 8.0, "cache_write": 5.0, "cache_write_1h": 7.0,
                        "cache_read": 0.4, "web_search_per_1k": 10.0,
                        "long_context": {"threshold_tokens": 1000, "input": 8.0, "output": 12.0,
                                         "cache_write": 10.0, "cache_write_1h": 16.0, "cache_read": 0.8}}
    assert [p for p in cli.json("prices")["data"] if p["model"] == "m*"] == [replaced]
    bad = cli.fail("prices", "set", "m", "--input", "1", "--output", "2", "--cache-write", "1",
                   "--cache-read", "0.1", "--long-context", "{not json")
    assert "--long-context" in bad


def test_prices_set_rejects_negative_price(cli):
    before = cli.json("prices")
    line = cli.fail("prices", "set", "claude-sonnet-4-5", "--input", "-1", "--output", "2",
                    "--cache-write", "1", "--cache-read", "0.1")
    assert "input" in line
    assert cli.json("prices") == before


# secret ---------------------------------------------------------------------------

def test_secret_prints_a_new_fernet_key(runner):
    first = runner.ok("secret")
    lines = first.splitlines()
    assert len(lines) == 1
    box = Fernet(lines[0].encode())
    assert box.decrypt(box.encrypt(b"hello")) == b"hello"
    assert runner.ok("secret") != first


# bad configuration ---------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["db", "upgrade"],
    ["db", "status"],
    ["keys", "list"],
    ["keys", "create", "--name", "x"],
    ["channels", "list"],
    ["prices"],
])
@pytest.mark.parametrize("bad, mentions", [
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"OCTORELAY_SECRET_KEY": "not-a-fernet-key"}, "OCTORELAY_SECRET_KEY"),
    ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere", "OCTORELAY_SECRET_KEY": ""},
     "OCTORELAY_SECRET_KEY"),
    ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
])
def test_bad_config_gives_one_error_line_and_exit_2(runner, monkeypatch, args, bad, mentions):
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    result = runner(*args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exc_info)
    assert isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("octorelay: error: ")
    assert mentions in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_keys_and_channels_by_name_as_well_as_id(cli):
    """A name reads as what it does and needs no id from an earlier step (the README's CLI block,
    issue 20, item 8); a name several keys share, or an unknown one, is an error that changes nothing."""
    key = create_key(cli, "--rpm", "60")
    assert cli.json("keys", "update", "k", "--rpm", "120")["rpm"] == 120
    assert cli.json("keys", "show", "k")["id"] == key["id"]
    assert cli.json("keys", "show", str(key["id"]))["rpm"] == 120
    other = create_key(cli)  # a second key named "k"
    assert "several keys are named 'k': give the id" in cli.fail("keys", "revoke", "k")
    assert cli.json("keys", "show", str(other["id"]))["status"] == "active"
    assert cli.json("keys", "revoke", str(other["id"]))["status"] == "revoked"
    assert "no key named 'nobody'" in cli.fail("keys", "update", "nobody", "--rpm", "1")

    cli.ok("channels", "add", "--name", "eu", "--type", "mock", "--model", "claude-*")
    cli.ok("channels", "add", "--name", "us", "--type", "mock", "--model", "claude-*")
    assert cli.json("channels", "update", "eu", "--priority", "10")["priority"] == 10
    listed = {c["name"]: c for c in cli.json("channels", "list")["data"]}
    assert (listed["eu"]["priority"], listed["us"]["priority"]) == (10, 0)
    assert "removed channel" in cli.ok("channels", "remove", "us")
    assert [c["name"] for c in cli.json("channels", "list")["data"]] == ["eu"]
    assert "no channel named 'us'" in cli.fail("channels", "remove", "us")
    assert "no channel named 'us'" in cli.fail("channels", "update", "us", "--weight", "2")
