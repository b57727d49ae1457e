#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: daemon_image_push
short_description: Push an image a Docker API holds to a registry, the login in memory only
version_added: 0.2.0
description:
  - Pushes the image I(source) (by default I(name):I(tag)) that a Docker API (docker, or podman's API service) holds,
    an image it just built for example, to the registry as I(name):I(tag), tagging it so first when I(source) is
    another name, as C(docker tag) and C(docker push) would.
  - Without C(docker login). The login (I(username) and I(password), or the one I(docker_config) holds for the
    registry) is handed to the Docker API in the push request itself (the docker SDK's C(auth_config), sent as its
    C(X-Registry-Auth) header). No docker config file is written, so no login rests on disk however long the push
    takes or however the run ends, and no program is started with it on its command line or in its environment.
  - The Docker API connects to the registry itself, with its own trust. A registry with a private CA must be trusted
    by it (Docker C(/etc/docker/certs.d/<host:port>/ca.crt), podman C(/etc/containers/certs.d/<host:port>/)), and a
    plain-HTTP one listed as insecure (Docker C(insecure-registries), podman C(registries.conf)). I(ca_path),
    I(validate_certs) and I(insecure) are for this module's own reads of the registry only.
  - The registry is asked first (and after the push) what the tag points at, with the same authentication as
    M(datarobot_mlops.management_agent.registry_image_info). When the tag already holds the image (its config digest
    is the local image's ID, or its manifest digest is, or the Docker API recorded that manifest for this repository),
    nothing is tagged or pushed and C(changed=false).
  - The C(agent_images) role pushes the images the vendor Makefiles built with it.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
extends_documentation_fragment:
  - datarobot_mlops.management_agent.action_group.registry
  - datarobot_mlops.management_agent.registry_auth
options:
  name:
    description:
      - Repository to push to, with registry host and optional port, e.g.
        C(registry.example.com/datarobot/mlops-management-agent).
    type: str
    required: true
  tag:
    description:
      - Tag to push. C(latest) is refused; Kubernetes and the chart cache images by tag, so a moving tag makes
        deployments unpredictable.
    type: str
    required: true
  source:
    description:
      - The local image to push, by name (C(repository:tag)) or ID. Default I(name):I(tag).
      - When it is not already tagged I(name):I(tag) in the Docker API, it is tagged so first.
    type: str
  docker_host:
    description:
      - Docker API endpoint, e.g. C(unix:///run/podman/podman.sock) or C(tcp://build-host:2376). Default
        C(DOCKER_HOST), else the docker CLI's current context, else the default socket. C(DOCKER_TLS_VERIFY) and
        C(DOCKER_CERT_PATH) are honoured as the docker CLI honours them.
    type: str
  push_timeout:
    description:
      - Seconds the Docker API may take to answer. podman's API says nothing until the push has ended, so this is
        also how long one push may take there.
    type: int
    default: 3600
  background:
    description:
      - Start the push in a worker of its own and return at once (C(started=true), C(changed=false), I(job_dir),
        C(pid)); wait for it with the M(datarobot_mlops.management_agent.push_progress) action, which prints a
        progress line every few seconds and returns the push's result as this module would have.
      - The worker is forked from the module and keeps the arguments it already has in memory (the login among
        them); with pipelining they are never written to disk, which Ansible's C(async) cannot promise.
      - The worker writes C(worker.json), C(progress.json) (the image, its size, the phase, and the bytes and layers
        the Docker API says it pushed; Docker tells them, podman's API does not, so there the line says how long it
        has been pushing) and at the end C(result.json) (secret values masked, mode 0600) into I(job_dir). It stops
        once the Ansible run that started it has ended, or after I(background_timeout).
      - Ignored in check mode, which pushes nothing and runs in the foreground.
    type: bool
    default: false
    version_added: 0.2.0
  job_dir:
    description:
      - With I(background), the directory for the worker's files. When not given, the module makes a new one (mode
        0700, C(pps-push-*) in the temporary directory) and returns it as RV(job_dir). Remove it once the push is
        collected (M(datarobot_mlops.management_agent.push_progress) with C(remove=true)).
      - A directory given here must be a new directory of the user that runs the module, closed to others (mode
        0700), holding no earlier job.
    type: path
    version_added: 0.2.0
  background_timeout:
    description: With I(background), seconds the worker may push; it then stops and writes a failed result that says so.
    type: int
    default: 7200
    version_added: 0.2.0
  retries:
    description: Attempts on connection errors, 5xx and 429 answers of the registry, with exponential backoff.
    type: int
    default: 3
  timeout:
    description:
      - How long to wait for one answer of the registry (this module's own reads, not the push).
      - Whole seconds (C(600)) or a duration string as kubernetes.core's C(helm) module and helm's C(--timeout)
        take it, such as C(90s), C(10m), C(1h30m).
    type: raw
    default: 60
attributes:
  check_mode:
    support: full
    description:
      - Reads (the registry's tag, the Docker API's image) and checks whether the login may push, as a push starts
        (an upload session opened and cancelled at once, nothing stored). Reports whether the image would be tagged
        and pushed. An image the Docker API does not hold yet is reported as one that would be
        pushed once built, so a check made before the build that makes it passes.
  diff_mode:
    support: full
    description: Shows the tag's manifest digest before and after.
  idempotent:
    support: full
    description: When the registry's tag already holds the image, nothing is tagged or pushed and C(changed=false).
  async:
    support: none
    description:
      - Do not run it as an async job. An async job cannot be pipelined, so its module file, which holds the
        registry password among the arguments, would stay on disk while the job runs.
requirements:
  - docker (the Python docker SDK)
  - requests
notes:
  - A module cannot print while it runs; in the foreground the push is reported when it has ended (RV(summary)).
    With I(background), M(datarobot_mlops.management_agent.push_progress) prints a line every few seconds while it
    runs. podman's Docker API names no layers, so there RV(layers_sent) and the other counts stay 0.
seealso:
  - module: datarobot_mlops.management_agent.pps_image
    description: Pushes a C(docker save) archive, with or without a Docker API.
  - module: datarobot_mlops.management_agent.registry_image_info
    description: Whether a tag exists, and its digest.
"""

EXAMPLES = r"""
- name: Push the image the vendor Makefile built
  datarobot_mlops.management_agent.daemon_image_push:
    name: registry.example.com/datarobot/mlops-management-agent
    tag: 9.2.0
    username: "{{ mlops_registry_username }}"
    password: "{{ mlops_registry_password }}"
  register: pushed

- name: Push in the background, a progress line every 5 seconds, then remove the job directory
  datarobot_mlops.management_agent.daemon_image_push:
    name: registry.example.com/datarobot/mlops-management-agent
    tag: 9.2.0
    username: "{{ mlops_registry_username }}"
    password: "{{ mlops_registry_password }}"
    background: true
  register: push_job

- name: Wait for it
  datarobot_mlops.management_agent.push_progress:
    job_dir: "{{ push_job.job_dir }}"
    interval: 5
    remove: true
  register: pushed

- name: Push a build named otherwise, under an organisation's path, through podman's API
  datarobot_mlops.management_agent.daemon_image_push:
    source: docker.io/datarobot/mlops-management-agent:9.2.0
    name: docker.io/acme/mlops-management-agent
    tag: 9.2.0
    docker_host: unix:///run/podman/podman.sock
    username: acme-ci
    password: "{{ docker_hub_token }}"
"""

RETURN = r"""
started:
  description: With I(background), the push was started in its worker; the other values come with its result.
  returned: when started in the background
  type: bool
finished:
  description:
    - With I(background), always false here; M(datarobot_mlops.management_agent.push_progress) returns it true with
      the push's result.
  returned: when started in the background
  type: bool
job_dir:
  description: With I(background), the job directory, I(job_dir) as given or the one the module made.
  returned: when started in the background
  type: str
  sample: /tmp/pps-push-k2x9d1ab
pid:
  description: With I(background), the worker's process id.
  returned: when started in the background
  type: int
background_timeout:
  description: With I(background), the seconds the worker may push.
  returned: when started in the background
  type: int
image:
  description: The image in the registry, I(name):I(tag).
  returned: when the push ran (not when started in the background)
  type: str
  sample: registry.example.com/datarobot/mlops-management-agent:9.2.0
source:
  description: The local image pushed.
  returned: when the push ran (not when started in the background)
  type: str
image_id:
  description: The local image's ID in the Docker API; empty in check mode when it does not hold the image yet.
  returned: when the push ran (not when started in the background)
  type: str
  sample: sha256:f370cb23176ff0ed476cb427e2cf73da85826bb70976eac4843b02690037e653
digest:
  description: The tag's manifest digest after the push (or as it was, when nothing changed); empty in check mode
    when it would change.
  returned: when the push ran (not when started in the background)
  type: str
  sample: sha256:ac84032787aa891be40b6f9a08ad7f0a3e92fec7c6d23db9265a2fa0bfc8a036
before:
  description: The tag's manifest digest before; empty when the registry did not have the tag.
  returned: when the push ran (not when started in the background)
  type: str
tagged:
  description: Whether the local image was (in check mode, would be) tagged I(name):I(tag) before the push.
  returned: when the push ran (not when started in the background)
  type: bool
layers_sent:
  description: Layers the push sent (as Docker reports them; 0 with podman's API, which names none).
  returned: when the push ran (not when started in the background)
  type: int
layers_existing:
  description: Layers the registry had already (Docker only).
  returned: when the push ran (not when started in the background)
  type: int
layers_mounted:
  description: Layers the registry mounted from another of its repositories (Docker only).
  returned: when the push ran (not when started in the background)
  type: int
seconds:
  description: Seconds the tag and the push took.
  returned: when the push ran (not when started in the background)
  type: float
summary:
  description: One line for people about what happened.
  returned: when the push ran (not when started in the background)
  type: str
  sample: "registry.example.com/datarobot/mlops-management-agent:9.2.0: pushed in 14s (6 layers: 4 sent, 2 already there, 0 mounted)"
"""

import os

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._daemon_push import (
    HAS_DOCKER,
    LocalImagePusher,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_job import PROGRESS, start_job
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import PushProgress
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    Repository,
    validate_tag,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import RegistryModule

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    tag=dict(type="str", required=True),
    source=dict(type="str"),
    docker_host=dict(type="str"),
    push_timeout=dict(type="int", default=3600),
    background=dict(type="bool", default=False),
    job_dir=dict(type="path"),
    background_timeout=dict(type="int", default=7200),
    retries=dict(type="int", default=3),
    timeout=dict(type="raw", default=60),
)


def push(module: RegistryModule) -> dict:
    params = module.params
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker", reason="to push through a Docker API"))
    if params["push_timeout"] < 1:
        module.fail_json(msg=f"push_timeout must be at least one second, not {params['push_timeout']}.")
    repository, tag = Repository.parse(params["name"]), validate_tag(params["tag"])
    client, credentials = module.registry_client(repository.registry)

    def pushed(progress_file: str | None) -> dict:
        pusher = LocalImagePusher(client, params["name"], tag, source=params["source"],
                                  credentials=credentials, docker_host=params["docker_host"],
                                  timeout=params["push_timeout"], check_mode=module.check_mode,
                                  progress=PushProgress(progress_file, image=f"{params['name']}:{tag}"))
        return pusher.push().as_result(module._diff)

    if not params["background"] or module.check_mode:
        return pushed(None)
    client.close_connections()  # the worker opens its own; inherited sockets are closed when it detaches
    # Without job_dir, start_job makes one (0700, in the temporary directory) and names it in the result.
    return start_job(params["job_dir"], params["background_timeout"],
                     lambda job_dir: pushed(os.path.join(job_dir, PROGRESS)), module.worker_cleaner())


def main() -> None:
    module = RegistryModule(ARGUMENT_SPEC, supports_check_mode=True)
    module.run(lambda: push(module))


if __name__ == "__main__":
    main()
