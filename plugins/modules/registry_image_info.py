#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: registry_image_info
short_description: Whether a tag exists in a Docker v2 / OCI registry, and its manifest digest; or whether a login works
version_added: 0.1.0
description:
  - Asks the registry for the manifest of I(name):I(tag) (C(GET /v2/<path>/manifests/<tag>)) with the same
    authentication as M(datarobot_mlops.management_agent.pps_image) (Basic, Docker token/Bearer, docker
    C(config.json)), and returns whether it exists and its digest. No Docker daemon is needed.
  - With I(registry) instead of I(name) and I(tag), only checks that the registry answers and accepts the login,
    the way C(docker login) does (C(GET /v2/), answering the registry's challenge with Basic auth, or with a token asked
    for no repository). It fails, saying why, when the registry is unreachable, its certificate is not trusted or it
    rejects the login. Nothing is read from any repository.
  - With I(may_push), a tag the registry does not have yet also gets the check a push starts with, so that a
    download or a build does not come before a push the registry would refuse.
  - The C(agent_images) role uses it to skip building images that are already pushed, and to verify them; the
    C(pps_image) role asks it before downloading an archive; the C(preflight) role checks the registry login with
    I(registry).
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
extends_documentation_fragment:
  - datarobot_mlops.management_agent.action_group.registry
  - datarobot_mlops.management_agent.registry_auth
attributes:
  check_mode:
    support: full
    description: Runs the same checks in check mode, I(may_push)'s upload session included.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
  idempotent:
    support: full
    description: >-
      Always returns C(changed=false). It only reads, except that I(may_push) opens an upload session and cancels
      it at once, as a push would begin: nothing is stored (a registry that cannot cancel one lets it expire).
options:
  name:
    description:
      - Repository with registry host and optional port, e.g. C(registry.example.com/datarobot/mlops-management-agent).
      - Docker's reference rules apply to Docker Hub; C(docker.io/acme/mlops-management-agent) is looked up on
        C(registry-1.docker.io), and a one-component path under C(docker.io) or C(index.docker.io) gets C(library/).
      - Required unless I(registry) is given; needs I(tag).
    type: str
  tag:
    description: Tag (or C(sha256:) digest) to look up.
    type: str
  registry:
    description:
      - Registry host and optional port, e.g. C(registry.example.com) or C(docker.io), to check the login
        of, instead of looking up I(name):I(tag).
      - Docker Hub may be named C(docker.io), C(index.docker.io) or C(registry-1.docker.io); its API host
        C(registry-1.docker.io) is asked.
    type: str
  may_push:
    description:
      - With I(name), when the tag does not exist, also check that the login may push to the repository, and fail
        saying so when it may not (a read-only robot account, a token or role that may only pull).
      - The check is the one a push starts with, C(GET /v2/) then an upload session
        (C(POST /v2/<path>/blobs/uploads/)) cancelled at once (C(DELETE)); nothing is stored. C(GET /v2/)
        alone answers 200 to a login that may only pull.
      - Not with I(registry).
    type: bool
  retries:
    description: Attempts on connection errors, 5xx and 429 answers, with exponential backoff.
    type: int
    default: 3
  timeout:
    description:
      - How long to wait for an answer.
      - Whole seconds (C(600)) or a duration string as kubernetes.core's C(helm) module and helm's C(--timeout)
        take it, such as C(90s), C(10m), C(1h30m), C(1.5h) (units C(h), C(m), C(s), C(ms), C(us), C(ns); a fraction
        of a second is rounded up).
    type: raw
    default: 60
requirements:
  - requests
"""

EXAMPLES = r"""
- name: Is the management agent image pushed?
  datarobot_mlops.management_agent.registry_image_info:
    name: registry.example.com/datarobot/mlops-management-agent
    tag: 9.2.0
    username: "{{ mlops_registry_username }}"
    password: "{{ mlops_registry_password }}"
  register: agent_image

- name: Say so
  ansible.builtin.debug:
    msg: "{{ agent_image.image }} is {{ agent_image.digest if agent_image.exists else 'missing' }}"

- name: Is the PPS image pushed, and if not, may this login push it? (fails saying why when it may not)
  datarobot_mlops.management_agent.registry_image_info:
    name: registry.example.com/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    may_push: true
    username: "{{ mlops_registry_username }}"
    password: "{{ mlops_registry_password }}"
  register: pps_image

- name: Does the registry accept the login? (fails saying why when it does not)
  datarobot_mlops.management_agent.registry_image_info:
    registry: registry.example.com
    username: "{{ mlops_registry_username }}"
    password: "{{ mlops_registry_password }}"
"""

RETURN = r"""
exists:
  description: Whether the registry has the tag.
  returned: with I(name)
  type: bool
image:
  description: The full reference looked up.
  returned: with I(name)
  type: str
  sample: registry.example.com/datarobot/mlops-management-agent:9.2.0
digest:
  description: Manifest digest of the tag; empty when it does not exist.
  returned: with I(name)
  type: str
  sample: sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270
media_type:
  description: Media type of the manifest (image manifest or index); empty when the tag does not exist.
  returned: with I(name)
  type: str
may_push:
  description: Whether the login was found to be allowed to push (a refusal fails the task instead).
  returned: with I(name) and I(may_push), when the tag does not exist
  type: bool
  sample: true
registry:
  description: The registry whose login was checked.
  returned: with I(registry)
  type: str
  sample: registry.example.com
auth:
  description: How the registry asked to be logged in to; C(none) when it asked for nothing.
  returned: with I(registry)
  type: str
  sample: bearer
  choices: [none, basic, bearer]
"""

import hashlib
import re

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    Repository,
    api_host,
    validate_registry,
    validate_tag,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import RegistryModule

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

ARGUMENT_SPEC = dict(
    name=dict(type="str"),
    tag=dict(type="str"),
    registry=dict(type="str"),
    may_push=dict(type="bool"),
    retries=dict(type="int", default=3),
    timeout=dict(type="raw", default=60),
)


def look_up(module: RegistryModule) -> dict:
    """Whether the registry has name:tag, and its manifest digest and media type."""
    params = module.params
    repository = Repository.parse(params["name"])
    # Looking up "latest" is harmless; only pushing it is refused elsewhere.
    reference = params["tag"] if _DIGEST.match(params["tag"]) or params["tag"] == "latest" else \
        validate_tag(params["tag"])
    client = module.registry_client(repository.registry)[0]
    found = client.manifest(repository.path, reference)
    separator = "@" if reference.startswith("sha256:") else ":"
    result = dict(changed=False, exists=found is not None, image=f"{repository}{separator}{reference}", digest="",
                  media_type="")
    if found is not None:
        digest, media_type, body = found
        result.update(digest=digest or f"sha256:{hashlib.sha256(body).hexdigest()}",
                      media_type=media_type.split(";", 1)[0].strip())
    elif params["may_push"]:
        client.check_access(repository.path)  # fails, saying so, when the login may not push there
        result["may_push"] = True
    return result


def check_login(module: RegistryModule) -> dict:
    """Whether the registry answers and accepts the login (read-only: no repository is named)."""
    registry = validate_registry(module.params["registry"])
    scheme = module.registry_client(api_host(registry))[0].check_login()
    return dict(changed=False, registry=registry, auth=scheme)


def main() -> None:
    module = RegistryModule(ARGUMENT_SPEC, supports_check_mode=True,
                            mutually_exclusive=[("registry", "name"), ("registry", "tag"), ("registry", "may_push")],
                            required_one_of=[("registry", "name")], required_by={"name": "tag"})
    module.run(lambda: check_login(module) if module.params["registry"] else look_up(module))


if __name__ == "__main__":
    main()
