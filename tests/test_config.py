"""Configuration: defaults per docs/api.md (Running it), and one clear line for each bad value."""
import pytest

from app.config import ConfigError, load_settings


def test_defaults():
    s = load_settings({})
    assert (s.port, s.database_url, s.redis_url, s.admin_token) == (8000, "sqlite:///octorelay.db", None, None)
    assert (s.web_concurrency, s.worker_class, s.threads, s.max_body_mb) == (1, "gevent", 1000, 32.0)
    assert s.log_level == "INFO" and s.max_attempts == 3 and s.secret_keys == ()


def test_gthread_keeps_its_own_thread_count_default():
    assert load_settings({"OCTORELAY_WORKER_CLASS": "gthread"}).threads == 64
    assert load_settings({"OCTORELAY_WORKER_CLASS": "gthread", "OCTORELAY_THREADS": "8"}).threads == 8


def test_values_and_rotation_list():
    s = load_settings({"PORT": "9000", "OCTORELAY_SECRET_KEY": "a, b", "LOG_LEVEL": "debug",
                       "OCTORELAY_WORKER_CLASS": "gevent", "DATABASE_URL": "postgresql://u@h/db"})
    assert s.port == 9000 and s.secret_keys == ("a", "b") and s.log_level == "DEBUG"
    assert s.worker_class == "gevent" and not s.is_sqlite


@pytest.mark.parametrize("env, names", [
    ({"PORT": "eighty"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
    ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    ({"DATABASE_URL": "octorelay.db"}, "DATABASE_URL"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
    ({"OCTORELAY_WORKER_CLASS": "sync"}, "OCTORELAY_WORKER_CLASS"),
    ({"OCTORELAY_MAX_BODY_MB": "lots"}, "OCTORELAY_MAX_BODY_MB"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
])
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert names in str(err.value) and "\n" not in str(err.value)


def test_postgres_without_secret_key_refuses_to_start():
    from app import create_app

    with pytest.raises(ConfigError, match="OCTORELAY_SECRET_KEY is required"):
        create_app({"DATABASE_URL": "postgresql://postgres@127.0.0.1/test"})


def test_malformed_secret_key_refuses_to_start(tmp_path):
    from app import create_app

    with pytest.raises(ConfigError, match="not a valid Fernet key"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "OCTORELAY_SECRET_KEY": "short"})


def test_several_workers_need_redis_else_one_serves():
    assert load_settings({"WEB_CONCURRENCY": "2"}).serving_workers == 1  # no Redis: one worker (logged)
    assert load_settings({"WEB_CONCURRENCY": "2", "REDIS_URL": "redis://127.0.0.1:6379/0"}).serving_workers == 2


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("0", False), ("", False)])
def test_fail_open_flag(raw, value):
    assert load_settings({"OCTORELAY_LIMITS_FAIL_OPEN": raw}).limits_fail_open is value


def test_fail_open_flag_rejects_junk():
    with pytest.raises(ConfigError, match="OCTORELAY_LIMITS_FAIL_OPEN"):
        load_settings({"OCTORELAY_LIMITS_FAIL_OPEN": "maybe"})


@pytest.mark.parametrize("raw, host", [(None, "0.0.0.0"), ("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"),
                                       ("[::1]", "[::1]"), ("localhost", "localhost")])
def test_host_is_the_listen_address(raw, host):
    assert load_settings({} if raw is None else {"HOST": raw}).host == host


def test_a_bad_host_refuses_to_start():
    with pytest.raises(ConfigError, match="HOST"):
        load_settings({"HOST": "not a host!"})
