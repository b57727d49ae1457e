from __future__ import annotations

import os

import pytest
from ansible.module_utils.errors import AnsibleFallbackNotFound

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _secret_env
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._secret_env import (
    SecretFileError,
    raise_unreadable_secret_files,
    secret_fallback,
    secret_from_env,
)


def test_the_value_wins_over_the_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    assert secret_from_env("X_PASSWORD", {"X_PASSWORD": "from-env", "X_PASSWORD_FILE": str(secret)}) == "from-env"
    assert secret_from_env("X_PASSWORD", {"X_PASSWORD_FILE": str(secret)}) == "from-file"


def test_only_the_final_line_break_is_dropped(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(" two words \r\n")
    assert secret_from_env("X_PASSWORD", {"X_PASSWORD_FILE": str(secret)}) == " two words "


def test_neither_set_is_none():
    assert secret_from_env("X_PASSWORD", {}) is None
    assert secret_from_env("X_PASSWORD", {"X_PASSWORD_FILE": ""}) is None


def test_an_unreadable_file_says_which_variable_and_what_to_do(tmp_path):
    missing = tmp_path / "gone"
    with pytest.raises(SecretFileError, match=r"X_PASSWORD_FILE names .*gone, which cannot be read .*set X_PASSWORD"):
        secret_from_env("X_PASSWORD", {"X_PASSWORD_FILE": str(missing)})
    assert issubclass(SecretFileError, MlopsError)


def test_the_fallback_records_an_unreadable_file_instead_of_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(_secret_env, "_UNREADABLE", {})
    monkeypatch.delenv("X_PASSWORD", raising=False)
    monkeypatch.delenv("X_PASSWORD_FILE", raising=False)
    with pytest.raises(AnsibleFallbackNotFound):
        secret_fallback("X_PASSWORD")
    raise_unreadable_secret_files()  # nothing recorded
    monkeypatch.setenv("X_PASSWORD_FILE", str(tmp_path / "gone"))
    assert secret_fallback("X_PASSWORD") == ""
    with pytest.raises(SecretFileError, match="X_PASSWORD_FILE"):
        raise_unreadable_secret_files()
    (tmp_path / "there").write_text("s3cret")
    monkeypatch.setenv("X_PASSWORD_FILE", os.fspath(tmp_path / "there"))
    assert secret_fallback("X_PASSWORD") == "s3cret"
