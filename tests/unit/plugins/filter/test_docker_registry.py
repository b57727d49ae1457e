"""The docker_registry filter: the roles' image references, docker config keys and Docker Hub repository paths."""

from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.filter.docker_registry import (
    FilterModule,
    docker_registry,
)

NAMES = ["datarobot/mlops-management-agent", "datarobot/mlops-tracking-agent",
         "datarobot/datarobot-portable-prediction-api", "mlops/frozen-models"]


@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"])
def test_docker_hub_paths_are_the_organisation_and_the_name(host):
    facts = docker_registry(host, NAMES, "acme/")
    assert facts["host"] == "docker.io"
    assert facts["api_host"] == "registry-1.docker.io"
    assert facts["config_key"] == "https://index.docker.io/v1/"
    assert facts["docker_hub"] is True
    assert facts["repositories"] == ["acme/mlops-management-agent", "acme/mlops-tracking-agent",
                                     "acme/datarobot-portable-prediction-api", "acme/frozen-models"]
    assert facts["problem"] == ""


@pytest.mark.parametrize("prefix", ["", "acme/team/", "Acme/"])
def test_docker_hub_without_a_one_part_organisation_is_a_problem(prefix):
    problem = docker_registry("docker.io", NAMES, prefix)["problem"]
    assert problem.startswith("Docker Hub repositories are <organisation or user>/<name>")
    assert "mlops_registry_path_prefix: acme/" in problem


def test_other_registries_keep_host_key_and_paths():
    facts = docker_registry("registry.example.com:5000", NAMES, "team/")
    assert facts == {"host": "registry.example.com:5000", "api_host": "registry.example.com:5000",
                     "config_key": "registry.example.com:5000", "docker_hub": False,
                     "repositories": ["team/" + name for name in NAMES], "problem": ""}


def test_an_empty_host_stays_empty():
    assert docker_registry("", NAMES)["host"] == docker_registry(None)["host"] == ""


def test_registered():
    assert FilterModule().filters()["docker_registry"] is docker_registry
