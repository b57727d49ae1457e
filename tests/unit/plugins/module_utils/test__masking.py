"""The one Masker: secrets known by value, by key, by path and from manifests, hidden the same way everywhere."""

from __future__ import annotations

import json

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import (
    MASK,
    Masker,
    is_sensitive_key,
    masked_scalar,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._service_account_token import (
    docker_config,
    masked,
)


def test_a_secret_given_by_value_is_hidden_whatever_its_length():
    masker = Masker().add("pw", None, "")
    assert masker.text("denied for user u with pw") == f"denied for user u with {MASK}"
    assert masker.secrets == {"pw"}  # nothing empty: an empty secret would mask between every character


def test_longer_secrets_are_replaced_first():
    masker = Masker().add("abc", "abcdef")
    assert masker.text("x abcdef y abc") == f"x {MASK} y {MASK}"


def test_keys_that_hold_a_secret_and_keys_that_name_one():
    assert is_sensitive_key("apiToken") and is_sensitive_key("password") and is_sensitive_key("auth")
    assert not is_sensitive_key("apiTokenSecretName") and not is_sensitive_key("tokenFile")
    assert not masked_scalar(True) and not masked_scalar(None) and masked_scalar(0)


def test_listed_paths_are_masked_below_them():
    masker = Masker(["imageBuilder.extraArgs"])
    values = {"imageBuilder": {"extraArgs": ["--pass", "s3cr3t-value"]}, "replicas": 1}
    masker.collect_values(values)
    assert masker.values(values) == {"imageBuilder": {"extraArgs": [MASK, MASK]}, "replicas": 1}
    assert masker.text("args: s3cr3t-value") == f"args: {MASK}"


def test_registry_logins_show_no_password_auth_or_other_token():
    config = docker_config(["registry.example:5000"], "builder", "sa-token-123")
    config["auths"]["registry.example:5000"]["identitytoken"] = "refresh-456"
    shown = masked(config)
    entry = shown["auths"]["registry.example:5000"]
    assert entry == {"username": "builder", "password": MASK, "auth": MASK, "identitytoken": MASK}
    assert "sa-token-123" not in json.dumps(shown) and "refresh-456" not in json.dumps(shown)
