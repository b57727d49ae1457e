# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: docker_registry
short_description: A registry host as image references, the registry API and docker configs name it
version_added: 0.1.0
description:
  - Applies the collection's registry rules (the same code as its modules) to a registry host, so that roles
    write image references and docker config keys the way docker, podman and Kaniko read them.
  - Docker Hub may be given as C(docker.io), C(index.docker.io) or C(registry-1.docker.io) (with or without a
    scheme); all three become C(docker.io) in image references, C(registry-1.docker.io) for the API and
    C(https://index.docker.io/v1/) as the docker config key. Any other host is returned unchanged.
  - With I(paths), also the repository paths to use on that registry, and what is wrong with them. On Docker Hub a
    repository is C(<organisation>/<name>), so each path becomes the I(prefix) followed by its last component (e.g.
    C(acme/mlops-management-agent)), and C(problem) says why that cannot be a Docker Hub repository.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _input:
    description: The registry host, C(host[:port]).
    type: str
    required: true
  paths:
    description: Repository paths without a prefix, e.g. C(datarobot/mlops-management-agent).
    type: list
    elements: str
    default: []
  prefix:
    description: What to put before each path (a project, an OpenShift namespace, a Docker Hub organisation and C(/)).
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: The auths key of the image builder's dockerconfigjson
  ansible.builtin.set_fact:
    auths_key: "{{ ('docker.io' | datarobot_mlops.management_agent.docker_registry).config_key }}"
    # https://index.docker.io/v1/
"""

RETURN = r"""
_value:
  description: The registry's names, and the repository paths when I(paths) is given.
  type: dict
  contains:
    host:
      description: As image references write it (C(docker.io) for Docker Hub).
      type: str
    api_host:
      description: Where the registry API answers (C(registry-1.docker.io) for Docker Hub).
      type: str
    config_key:
      description: The docker config C(auths) key (C(https://index.docker.io/v1/) for Docker Hub).
      type: str
    docker_hub:
      description: Whether the host is Docker Hub.
      type: bool
    repositories:
      description: The repository paths, prefixed, in the order of I(paths).
      type: list
      elements: str
    problem:
      description: Why the repositories cannot be used on this registry; empty when they can.
      type: str
"""

from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    api_host,
    docker_config_key,
    hub_repository_problem,
    is_docker_hub,
    reference_host,
)


def docker_registry(host: Any, paths: Any = (), prefix: str = "") -> dict[str, Any]:
    """The registry's names and, for `paths`, the repository paths to use there."""
    name = "" if host is None else str(host).strip()
    hub = is_docker_hub(name) if name else False
    prefix = "" if prefix is None else str(prefix)
    wanted = [str(path) for path in (paths or [])]
    repositories = [prefix + (path.rsplit("/", 1)[-1] if hub else path) for path in wanted]
    problem = next((found for found in map(hub_repository_problem, repositories) if found), "") if hub else ""
    return {"host": reference_host(name) if name else "", "api_host": api_host(name) if name else "",
            "config_key": docker_config_key(name) if name else "", "docker_hub": hub,
            "repositories": repositories, "problem": problem}


class FilterModule:
    """The collection's filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"docker_registry": docker_registry}
