"""Upstream-key encryption: the SQLite key file, masking, rotation errors."""
import os
import stat

import pytest

from app.config import ConfigError, load_settings
from app.crypto import SecretBox, mask, new_secret_key, secret_keys_for


def test_sqlite_key_file_is_created_once_with_mode_0600(tmp_path):
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path}/relay.db"})
    first = secret_keys_for(settings)
    path = tmp_path / "relay.db.secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret_keys_for(settings) == first
    SecretBox(first)  # a valid Fernet key


def test_roundtrip_and_wrong_key():
    box = SecretBox([new_secret_key()])
    token = box.encrypt("sk-ant-secret")
    assert "sk-ant-secret" not in token and box.decrypt(token) == "sk-ant-secret"
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        SecretBox([new_secret_key()]).decrypt(token)


@pytest.mark.parametrize("secret, shown", [
    ("sk-ant-api03-aaaaaaaaaaaaaaaaWq3", "sk-ant-…Wq3"),
    ("shortkey12", "…12"),
    ("abc", "…"),
])
def test_mask(secret, shown):
    assert mask(secret) == shown
