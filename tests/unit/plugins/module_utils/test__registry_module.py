from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import Credentials
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import RegistryAuthError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import (
    client_from_params,
    login_for,
    same_registry,
)

REGISTRY = "registry.example:5000"


def params(**overrides) -> dict:
    return {"username": None, "password": None, "credentials_host": None, "docker_config": None, "ca_path": None,
            "validate_certs": True, "insecure": False, "retries": 5, "timeout": 300, **overrides}


def docker_config(tmp_path, registry: str) -> str:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"%s": {"auth": "ZnJvbS1jb25maWc6c2VjcmV0"}}}' % registry)  # from-config:secret
    return str(path)


def test_explicit_login_wins_and_an_unreadable_docker_config_is_an_auth_error(tmp_path):
    client, credentials, warning = client_from_params(REGISTRY, params(username="u", password="p"))
    assert credentials == client.credentials == Credentials("u", "p")
    assert warning is None
    broken = tmp_path / "config.json"
    broken.write_text("{")
    with pytest.raises(RegistryAuthError, match="Cannot read docker config"):
        client_from_params(REGISTRY, params(docker_config=str(broken)))


@pytest.mark.parametrize("scope", [REGISTRY, "https://Registry.Example:5000/", " registry.example:5000"])
def test_a_login_scoped_to_the_image_registry_is_sent(scope):
    assert login_for(REGISTRY, params(username="u", password="p", credentials_host=scope)) == \
        (Credentials("u", "p"), None)


@pytest.mark.parametrize("scope", ["registry.example", "registry.example:5001", "other.example:5000"])
def test_a_login_for_another_registry_is_not_sent_there(tmp_path, scope):
    config = docker_config(tmp_path, REGISTRY)
    credentials, warning = login_for(REGISTRY, params(username="u", password="p", credentials_host=scope,
                                                      docker_config=config))
    assert credentials == Credentials("from-config", "secret")
    assert warning and scope in warning and f"not sent to {REGISTRY}" in warning and "p" not in warning.split()


def test_a_login_for_another_registry_without_a_docker_config_login_leaves_the_registry_anonymous(tmp_path):
    config = docker_config(tmp_path, "elsewhere.example")
    credentials, warning = login_for(REGISTRY, params(username="u", password="p", credentials_host="elsewhere.example",
                                                      docker_config=config))
    assert credentials is None and warning


@pytest.mark.parametrize(("host", "registry", "same"), [
    ("reg.example", "reg.example", True), ("http://reg.example:80", "reg.example:80", True),
    ("reg.example", "reg.example:443", False), ("reg.example.evil", "reg.example", False)])
def test_same_registry_compares_host_and_port_exactly(host, registry, same):
    assert same_registry(host, registry) is same
