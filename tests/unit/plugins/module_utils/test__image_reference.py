from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    InvalidReference,
    Repository,
    api_host,
    docker_config_key,
    hub_repository_problem,
    is_docker_hub,
    reference_host,
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


# --- Docker Hub: one registry under three names -------------------------------------------------------------------

@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io", "Docker.IO",
                                  "https://index.docker.io/v1/", "docker.io:443"])
def test_docker_hub_names_normalise_to_one_identity(host):
    assert is_docker_hub(host)
    assert reference_host(host) == "docker.io"
    assert api_host(host) == "registry-1.docker.io"
    assert docker_config_key(host) == "https://index.docker.io/v1/"


@pytest.mark.parametrize("host", ["registry.example.com", "127.0.0.1:5000", "docker.io.example.com",
                                  "mirror.gcr.io", "docker.io:5000"])
def test_other_registries_keep_their_names(host):
    assert not is_docker_hub(host)
    assert reference_host(host) == api_host(host) == docker_config_key(host) == host


@pytest.mark.parametrize("name, registry, path, shown", [
    # Docker's reference rules: no domain, docker.io and index.docker.io get library/ for one component ...
    ("ubuntu", "registry-1.docker.io", "library/ubuntu", "docker.io/library/ubuntu"),
    ("docker.io/ubuntu", "registry-1.docker.io", "library/ubuntu", "docker.io/library/ubuntu"),
    ("index.docker.io/ubuntu", "registry-1.docker.io", "library/ubuntu", "docker.io/library/ubuntu"),
    # ... registry-1.docker.io is a registry like any other to docker: no library/.
    ("registry-1.docker.io/ubuntu", "registry-1.docker.io", "ubuntu", "docker.io/ubuntu"),
    ("docker.io/acme/mlops-management-agent", "registry-1.docker.io", "acme/mlops-management-agent",
     "docker.io/acme/mlops-management-agent"),
    ("index.docker.io/acme/mlops-management-agent", "registry-1.docker.io", "acme/mlops-management-agent",
     "docker.io/acme/mlops-management-agent"),
    ("acme/mlops-management-agent", "registry-1.docker.io", "acme/mlops-management-agent",
     "docker.io/acme/mlops-management-agent"),
    ("registry.example.com/ubuntu", "registry.example.com", "ubuntu", "registry.example.com/ubuntu"),
])
def test_docker_hub_references_follow_dockers_rules(name, registry, path, shown):
    repository = Repository.parse(name)
    assert (repository.registry, repository.path, str(repository)) == (registry, path, shown)


@pytest.mark.parametrize("path", ["acme/mlops-management-agent", "acme-corp/datarobot-portable-prediction-api",
                                  "a1/frozen-models"])
def test_hub_repositories_are_organisation_and_name(path):
    assert hub_repository_problem(path) == ""


@pytest.mark.parametrize("path", ["mlops-management-agent", "acme/datarobot/mlops-management-agent",
                                  "Acme/mlops-management-agent", "/mlops-management-agent"])
def test_other_hub_paths_are_refused_with_the_rule(path):
    assert f"Docker Hub repositories are <organisation or user>/<name>, and {path!r} is not" in \
        hub_repository_problem(path)
    assert "mlops_registry_path_prefix: acme/" in hub_repository_problem(path)
