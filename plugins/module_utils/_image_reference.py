# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Image names as registries understand them: host[:port]/path:tag, validated up front."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

# From the OCI distribution spec: path components and tags.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$")
# Docker Hub has three names: image references write `docker.io` (docker, containerd and Kubernetes normalise
# `index.docker.io` to it), its registry API answers on registry-1.docker.io, and `docker login` (like Kaniko's
# and every docker config reader) keeps its login under the legacy index URL.
DOCKER_HUB = "registry-1.docker.io"
DOCKER_HUB_NAME = "docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# A Docker Hub repository is <organisation or user>/<name>: exactly two components.
_HUB_NAMESPACE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class InvalidReference(MlopsError, ValueError):
    """A repository name or tag a registry would refuse; the message says what to write instead."""


def validate_tag(tag: str) -> str:
    if tag == "latest":
        raise InvalidReference(
            "Refusing tag 'latest': the management agent's chart and Kubernetes cache images by tag, so a moving "
            "'latest' makes deployments unpredictable and rollbacks impossible. Use the PPS version, e.g. "
            "tag: '9.2.0' (the archive's version), and update imageBuilder.ppsImage with it.")
    if not _TAG.match(tag):
        raise InvalidReference(
            f"Invalid tag {tag!r}: tags are 1-128 characters of letters, digits, '_', '.' and '-', "
            "and do not start with '.' or '-'.")
    return tag


def validate_registry(host: str) -> str:
    """A registry as host[:port], the way image names and docker login write it."""
    if not _HOST.match(host or ""):
        raise InvalidReference(
            f"Invalid registry {host!r}: give host[:port] without a scheme or path, e.g. registry.example.com:5000.")
    return host


def is_docker_hub(host: str) -> bool:
    """`host` (as a user or a docker config writes it: maybe a scheme, `:443`, `/v1/`) is Docker Hub."""
    bare = (host or "").strip().split("://", 1)[-1].split("/", 1)[0].lower()
    return bare.removesuffix(":443") in _DOCKER_HUB_HOSTS


def reference_host(host: str) -> str:
    """The registry as image references write it: `docker.io` for Docker Hub, else `host` unchanged."""
    return DOCKER_HUB_NAME if is_docker_hub(host) else host


def api_host(host: str) -> str:
    """Where the registry API answers: registry-1.docker.io for Docker Hub, else `host` unchanged."""
    return DOCKER_HUB if is_docker_hub(host) else host


def docker_config_key(host: str) -> str:
    """The `auths` key of a docker config.json that docker, podman and Kaniko read for `host`."""
    return DOCKER_HUB_CONFIG_KEY if is_docker_hub(host) else host


def hub_repository_problem(path: str) -> str:
    """Why `path` cannot be a Docker Hub repository (it must be <organisation>/<name>); empty when it can."""
    parts = path.split("/")
    if len(parts) == 2 and all(_HUB_NAMESPACE.match(part) for part in parts):
        return ""
    return (f"Docker Hub repositories are <organisation or user>/<name>, and {path!r} is not: use your Docker Hub "
            "organisation as the only prefix, e.g. acme/mlops-management-agent (mlops_registry_path_prefix: acme/).")


@dataclass(frozen=True)
class Repository:
    registry: str  # host[:port]
    path: str      # e.g. datarobot/datarobot-portable-prediction-api

    @classmethod
    def parse(cls, name: str) -> "Repository":
        """'registry.example:5000/datarobot/pps' -> (registry.example:5000, datarobot/pps)."""
        if not name or name != name.strip() or "://" in name:
            raise InvalidReference(
                f"Invalid repository {name!r}: give host[:port]/path without a scheme, "
                "e.g. registry.example.com:5000/datarobot/datarobot-portable-prediction-api.")
        if "@" in name or ":" in name.rsplit("/", 1)[-1]:
            raise InvalidReference(f"Invalid repository {name!r}: put the tag in `tag`, not in the name.")
        first, rest = name.split("/", 1) if "/" in name else (name, "")
        if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB_NAME, name
        # Docker's reference rules: official images live under library/ for docker.io and index.docker.io (which
        # it normalises to docker.io), not for registry-1.docker.io, which it treats as any other registry.
        if registry.lower() in (DOCKER_HUB_NAME, "index.docker.io"):
            registry, path = DOCKER_HUB, path if "/" in path else f"library/{path}"
        elif is_docker_hub(registry):
            registry = DOCKER_HUB
        if not _HOST.match(registry):
            raise InvalidReference(f"Invalid registry host {registry!r} in {name!r}.")
        bad = [part for part in path.split("/") if not _COMPONENT.match(part)]
        if bad:
            raise InvalidReference(
                f"Invalid repository path {path!r}: component {bad[0]!r} must be lowercase letters and digits, "
                "separated by '.', '_', '__' or '-'.")
        if len(registry) + 1 + len(path) > 255:
            raise InvalidReference(f"Invalid repository {name!r}: longer than 255 characters.")
        return cls(registry, path)

    def __str__(self) -> str:
        """As image references write it (docker.io/... for Docker Hub)."""
        return f"{reference_host(self.registry)}/{self.path}"
