from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    InvalidReference,
    validate_registry,
)


@pytest.mark.parametrize("host", ["registry.example.com", "registry-1.docker.io", "127.0.0.1:5000", "localhost",
                                  "[::1]:5000"])
def test_registry_hosts_as_docker_login_takes_them(host):
    assert validate_registry(host) == host


@pytest.mark.parametrize("host", ["", "https://registry.example.com", "registry.example.com/datarobot",
                                  "registry.example.com:port", " registry.example.com"])
def test_anything_else_is_refused_with_an_example(host):
    with pytest.raises(InvalidReference, match="give host\\[:port\\] without a scheme or path"):
        validate_registry(host)
