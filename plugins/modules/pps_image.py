#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pps_image
short_description: Push the Portable Prediction Server image archive to a registry, with or without a Docker daemon
version_added: 0.1.0
description:
  - Puts the image in a C(docker save), C(podman save) or C(skopeo copy) archive (plain C(.tar) or gzip-compressed,
    recognised by content, not by name) into a registry under I(name):I(tag), as C(docker load), C(docker tag),
    C(docker push) would.
  - C(method=direct) (the default) talks the OCI distribution API itself and needs no Docker daemon, so it runs in
    AWX execution environments. It asks the registry which blobs it lacks and sends only those, mounts blobs
    from other repositories of the same registry when it can, streams and compresses layers in parallel threads
    (never unpacking the archive or holding a layer in memory), retries and resumes interrupted uploads, and
    puts the manifest last so that a failed run never leaves the tag pointing at missing blobs.
  - When the tag already points at the archive's image, nothing is sent and C(changed=false). A small cache
    (I(cache)) remembers which image an archive (path, size, modification time, inode) holds, so a repeated run
    decides that without reading the archive.
  - C(method=daemon) loads, tags and pushes through a Docker API (docker, or podman's API service) with the docker SDK.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
extends_documentation_fragment:
  - datarobot_mlops.management_agent.action_group.registry
  - datarobot_mlops.management_agent.registry_auth
options:
  src:
    description: The image archive.
    type: path
    required: true
  source_image:
    description:
      - Which image of the archive to push, by one of its names (C(RepoTags), OCI ref name) or config digest.
        Needed only when the archive holds several images.
    type: str
  name:
    description:
      - Target repository with registry host and optional port,
        e.g. C(registry.example.com:5000/datarobot/datarobot-portable-prediction-api).
    type: str
    required: true
  tag:
    description:
      - Tag to push, normally the PPS version. C(latest) is refused; Kubernetes and the chart cache images by tag,
        so a moving tag makes deployments unpredictable.
    type: str
    required: true
  additional_tags:
    description: More tags for the same image.
    type: list
    elements: str
    default: []
  method:
    description:
      - C(direct) pushes without a daemon. C(daemon) uses the Docker API at I(docker_host).
      - C(auto) is an alias of C(direct), kept so that existing playbooks and inventories keep working; the daemon
        path is only taken when asked for.
    type: str
    choices: [auto, direct, daemon]
    default: auto
  docker_host:
    description: Docker API endpoint for C(method=daemon), e.g. C(unix:///run/podman/podman.sock). Default C(DOCKER_HOST).
    type: str
  compression:
    description:
      - How C(direct) stores layers that are uncompressed in the archive. C(gzip) (default) is what every registry
        and runtime accepts; C(none) skips compression for registries on a fast local network (OCI manifest).
    type: str
    choices: [gzip, none]
    default: gzip
  compression_level:
    description: gzip level; with the isal library installed, levels above 3 are treated as 3.
    type: int
    default: 1
  workers:
    description:
      - Threads compressing layers (each layer is compressed in parallel blocks); layers are read half as many at
        a time (at least two). Default the number of CPUs, at most 8.
    type: int
  manifest_format:
    description:
      - C(auto) writes a Docker v2 schema 2 manifest when every layer is gzip (accepted by every registry),
        otherwise an OCI manifest.
    type: str
    choices: [auto, docker, oci]
    default: auto
  mount_from:
    description: Other repositories of the same registry to mount blobs from instead of uploading them.
    type: list
    elements: str
    default: []
  cache:
    description:
      - File where runs remember archive-to-image and layer-to-blob facts. Default
        C(~/.cache/datarobot_mlops/pps_image.json) (C($XDG_CACHE_HOME/datarobot_mlops/pps_image.json) when set). An
        empty string disables it (each run then reads the archive).
      - Only a hint that saves time, so a file that cannot be written is a warning, not a failure; the push is done
        by then. Check mode does not write it.
    type: path
  spool:
    description:
      - With C(method=direct), compress each layer once for every push of the same archive running at the same
        time on this machine (a fleet inventory with one registry per cluster, in parallel forks); the first push
        to reach a layer compresses it into the spool while uploading it, the others upload the spooled blob,
        each to its own registry, following the writer layer by layer (a layer's upload starts while it is still
        being compressed). The blob digests are the same everywhere. The last push to finish removes the
        archive's spool; a later run removes what a crashed run left.
      - The first push also spools the archive's index (its members, manifest and config); the pushes after it
        read and decompress no archive at all (see RV(archive_bytes_read)). The spool belongs to one archive
        file as it is (path, size, modification and change times, inode); a rewritten file gets its own.
      - Each spooled blob is checked before it is used (a whole published blob, the digest of the bytes this push
        sends, and the layer's digest from the image config, or this push's own read of the layer); anything else
        is compressed again here.
    type: bool
    default: true
  spool_dir:
    description:
      - Private directory (created 0700) of the spool. Default C(~/.cache/datarobot_mlops/spool)
        (C($XDG_CACHE_HOME/datarobot_mlops/spool) when set).
      - A directory given here that cannot be used (not writable, another user's) fails the push with a message;
        when the default one cannot be used, the push goes on without a spool.
    type: path
  spool_max_size:
    description:
      - MiB the spool of one archive may hold. Layers that do not fit are compressed by each push itself.
    type: int
    default: 16384
  fleet:
    description:
      - More registries to push the same archive and tags to, in this run (the role's fleet mode, where one host
        of a play batch pushes for every host that pushes the same archive). Each is a push of its own, in a thread;
        with I(spool), they compress each layer once between them.
      - A destination that cannot be reached, logged in to or pushed to fails alone; its entry in RV(fleet) says
        why. The task fails only when its own destination (I(name)) fails; its result then still holds RV(fleet).
      - The task reports C(changed) when any of its registries changed; each entry of RV(fleet) has its own
        C(changed).
      - Needs C(method=direct) or C(auto). The progress (I(progress_file)) sums all the pushes (bytes and blobs),
        under this run's image and the count of the other registries.
    type: list
    elements: dict
    default: []
    suboptions:
      key:
        description: What the destination's entry in RV(fleet) is keyed by (the role gives the inventory host).
        type: str
        required: true
      name:
        description: The destination's repository, C(registry/path) as I(name).
        type: str
        required: true
      username:
        description:
          - Its login. Without one, the environment's login is used as in a run of its own (C(REGISTRY_USERNAME),
            C(REGISTRY_PASSWORD), for C(REGISTRY_HOST) when set), or the docker config's for its registry; never
            this run's I(username).
        type: str
      password:
        description: The password or token of I(username).
        type: str
      ca_path:
        description: As I(ca_path), for this registry.
        type: path
      validate_certs:
        description: As I(validate_certs), for this registry.
        type: bool
        default: true
      insecure:
        description: As I(insecure), for this registry.
        type: bool
        default: false
  retries:
    description: Attempts for each request on connection errors, 5xx and 429 answers, with exponential backoff.
    type: int
    default: 5
  timeout:
    description:
      - How long to wait for one registry or Docker API answer (uploads are sent in 8 MiB pieces).
      - Whole seconds (C(600)) or a duration string as kubernetes.core's C(helm) module and helm's C(--timeout)
        take it, such as C(90s), C(10m), C(1h30m), C(1.5h) (units C(h), C(m), C(s), C(ms), C(us), C(ns); a fraction
        of a second is rounded up).
    type: raw
    default: 300
  progress_file:
    description:
      - A file the push rewrites while it runs (at most once a second, mode 0600) with what it has done so far,
        the image name, bytes of the archive read and in all, bytes sent, blobs done, mounted and skipped, the
        phase and when it started. It holds no credential. It is removed when the push ends, failed or not.
      - Give a path in a directory only you can write. With I(background), the default is C(progress.json) in
        I(job_dir), which the M(datarobot_mlops.management_agent.push_progress) action reads.
    type: path
    version_added: 0.2.0
  background:
    description:
      - Start the push in a worker of its own and return at once (C(started=true), C(changed=false), I(job_dir),
        C(pid)); wait for it with the M(datarobot_mlops.management_agent.push_progress) action, which prints a
        progress line every few seconds and returns the push's result as this module would have.
      - The target is checked first (address, login, push access), so those failures fail this task itself.
      - "The worker is forked from the module (detached: a new session, standard streams on C(/dev/null), every
        other descriptor closed) and keeps the arguments it already has in memory: with pipelining (the
        collection's C(ansible.cfg)) they are never written to disk. Ansible's C(async) is not needed and not
        wanted: an async job's module file holds every argument, the registry password among them, on disk while
        the job runs."
      - The worker writes C(worker.json) (its pid and start time), C(progress.json) and at the end C(result.json)
        (the result this module would return, secret values masked as Ansible masks them, mode 0600) into
        I(job_dir), which this module makes when it is not given (returned as RV(job_dir)). Remove it once the push
        is collected, as M(datarobot_mlops.management_agent.push_progress) with C(remove=true) does (the
        C(pps_image) role asks it to).
      - The worker stops once the Ansible run that started it has ended (interrupted, cancelled, or failed before it
        collected the push), and removes its files from I(job_dir) (and I(job_dir) when nothing else is in it). It
        finds that run among the module's parent processes in C(/proc), on the local connection. Through ssh it
        pushes until it ends or reaches I(background_timeout).
      - Ignored in check mode, which pushes nothing and runs in the foreground.
    type: bool
    default: false
    version_added: 0.2.0
  job_dir:
    description:
      - With I(background), the directory for the worker's files.
      - When not given, the module makes a new one itself (mode 0700, C(pps-push-*) in the temporary directory of the
        host that runs it, C(TMPDIR) or C(/tmp)) and returns it as RV(job_dir); if the worker cannot be started, it
        removes that directory again before it fails. Remove it once the push is collected
        (M(datarobot_mlops.management_agent.push_progress) with C(remove=true)).
      - A directory given here is the caller's and kept as it is. It must be a new directory of the user that runs
        the module, closed to others (mode 0700), holding no earlier job (M(ansible.builtin.tempfile) with
        C(state=directory) makes one).
    type: path
    version_added: 0.2.0
  background_timeout:
    description:
      - With I(background), seconds the worker may push; it then stops and writes a failed result that says so.
    type: int
    default: 7200
    version_added: 0.2.0
attributes:
  check_mode:
    support: full
    description:
      - Reports which blobs would be uploaded and about how many bytes (C(msg), C(would_upload_bytes)); sends and
        compresses nothing and writes no I(cache), so it costs about what a run with nothing to do costs. Whether the
        login may push is checked as a push starts, by an upload session opened and cancelled at once (nothing is
        stored). The manifest digest the tag would get is reported when every blob's digest is known without
        compressing (an earlier push of the same layers remembered in the cache, layers stored compressed, or C(compression=none));
        otherwise C(digest) is empty.
  diff_mode:
    support: full
    description:
      - Shows the tag's manifest digest before and after.
      - With I(fleet), one diff per registry, each headed by its image, the run's own first.
  idempotent:
    support: full
    description: A second run with the same archive and tag reports C(changed=false) and sends nothing.
  async:
    support: none
    description:
      - Use I(background) instead. An async job cannot be pipelined, so its module file, which holds the registry
        password among the arguments, would stay on disk while the job runs.
requirements:
  - requests
  - isal (optional, for fast gzip; zlib is used without it)
  - docker (for C(method=daemon))
notes:
  - An Ansible module cannot print while it runs. For very large archives give I(background), then
    wait with the M(datarobot_mlops.management_agent.push_progress) action, which prints progress lines (as the
    C(pps_image) role does); or push by hand with C(python tools/pps_push.py --help).
  - The watcher tells a worker that died (SIGKILL, out of memory) from a running one through C(/proc/<pid>/stat) on
    the host that runs the module (Linux); elsewhere only its time limit ends the wait.
"""

EXAMPLES = r"""
- name: Push the PPS image to the registry, no Docker daemon needed
  datarobot_mlops.management_agent.pps_image:
    src: /data/datarobot-portable-prediction-api-9.2.0.tar.gz
    name: registry.example.com/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    username: "{{ mlops_registry_username }}"
    password: "{{ mlops_registry_password }}"
  register: pps

- name: The seed's way, through a Docker API
  datarobot_mlops.management_agent.pps_image:
    src: /data/datarobot-portable-prediction-api-9.2.0.tar.gz
    name: 123456789012.dkr.ecr.us-east-1.amazonaws.com/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    method: daemon

- name: Push in the background (the module makes its private job directory)
  datarobot_mlops.management_agent.pps_image:
    src: /data/datarobot-portable-prediction-api-9.2.0.tar.gz
    name: registry.example.com/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    background: true
  register: pps_job

- name: Wait for it, a progress line every 5 seconds, then remove the job directory
  datarobot_mlops.management_agent.push_progress:
    job_dir: "{{ pps_job.job_dir }}"
    interval: 5
    remove: true
  register: pps

- name: One push for three regions' registries, each layer compressed once
  datarobot_mlops.management_agent.pps_image:
    src: /data/datarobot-portable-prediction-api-9.2.0.tar.gz
    name: 123456789012.dkr.ecr.us-east-1.amazonaws.com/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    username: AWS
    password: "{{ ecr_tokens['us-east-1'] }}"
    fleet:
      - key: eu-west-1
        name: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/datarobot/datarobot-portable-prediction-api
        username: AWS
        password: "{{ ecr_tokens['eu-west-1'] }}"
      - key: ap-south-1
        name: 123456789012.dkr.ecr.ap-south-1.amazonaws.com/datarobot/datarobot-portable-prediction-api
        username: AWS
        password: "{{ ecr_tokens['ap-south-1'] }}"
  register: pps  # pps.fleet['eu-west-1'].digest, ...
"""

RETURN = r"""
fleet:
  description:
    - With I(fleet), each destination's result by its key, with the values this module returns for its own push
      (C(changed), C(image), C(digest), C(summary) and the counts); a destination that failed has C(failed) and
      C(msg) instead.
  returned: with I(fleet), when the push ran (also when the task failed)
  type: dict
  sample: {"cluster-2": {"changed": true, "image": "registry-2.example.com/datarobot/pps:9.2.0",
           "digest": "sha256:4f0c...", "summary": "..."}}
own_changed:
  description:
    - With I(fleet), whether the push to I(name) itself changed that registry; C(changed) is whether any registry
      changed. The role reports each cluster as a host of its own, so the fleet's first host takes this one.
  returned: with I(fleet), when the push ran
  type: bool
  sample: false
started:
  description: With I(background), the push was started in its worker; the other values come with its result.
  returned: when started in the background
  type: bool
finished:
  description:
    - With I(background), always false here; the push goes on in its worker, and
      M(datarobot_mlops.management_agent.push_progress) returns it true with the push's result (as Ansible's
      C(async_status) does).
  returned: when started in the background
  type: bool
job_dir:
  description:
    - With I(background), the job directory (for M(datarobot_mlops.management_agent.push_progress)), I(job_dir) as
      given, or the one the module made (mode 0700) when it was not given.
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
  description: Full reference that was pushed.
  returned: when the push ran (not when started in the background)
  type: str
  sample: registry.example.com/datarobot/datarobot-portable-prediction-api:9.2.0
digest:
  description:
    - Manifest digest the tag points at. In check mode the one it would point at, or empty when that needs layers
      compressed first (see the check_mode attribute).
  returned: when the push ran (not when started in the background, see I(background))
  type: str
config_digest:
  description: The image's config digest (its image ID).
  returned: when the push ran (not when started in the background, see I(background))
  type: str
blobs_uploaded:
  description: Blobs sent to the registry.
  returned: when the push ran (not when started in the background, see I(background))
  type: int
blobs_skipped:
  description: Blobs the registry already had, or that were mounted from another repository.
  returned: when the push ran (not when started in the background, see I(background))
  type: int
blobs_mounted:
  description: Of the skipped blobs, those mounted from another repository.
  returned: when the push ran (not when started in the background, see I(background))
  type: int
bytes_uploaded:
  description: Bytes sent (compressed).
  returned: when the push ran (not when started in the background, see I(background))
  type: int
would_upload:
  description: In check mode, the archive members that would be uploaded.
  returned: when the push ran (not when started in the background, see I(background))
  type: list
  elements: str
would_upload_bytes:
  description:
    - In check mode, the bytes that would be sent, layers counted before compression (check mode compresses
      nothing, so their compressed size is not known).
  returned: when the push ran (not when started in the background, see I(background))
  type: int
bytes_compressed:
  description: Layer bytes that went through the compressor (always 0 in check mode, which compresses nothing).
  returned: when the push ran (not when started in the background, see I(background))
  type: int
msg:
  description: In check mode with a tag to change, what would be pushed.
  returned: when a check-mode run would push something
  type: str
  sample: would push 8 layers, about 2.4 GB before compression
blobs_from_spool:
  description:
    - Of the uploaded blobs, those another push of the same archive running at the same time compressed (I(spool)).
  returned: when the push ran (not when started in the background, see I(background))
  type: int
archive_bytes_read:
  description:
    - Bytes this push read from the archive file (compressed bytes for a C(.tar.gz)); 0 when it followed the index
      and blobs another push of the same archive spooled (I(spool)), or had nothing to send.
  returned: when the push ran (not when started in the background, see I(background))
  type: int
method:
  description: C(direct) or C(daemon).
  returned: when the push ran (not when started in the background, see I(background))
  type: str
elapsed:
  description: Seconds the push took.
  returned: when the push ran (not when started in the background, see I(background))
  type: float
archive_size:
  description: Size of the archive file in bytes.
  returned: when the push ran (not when started in the background, see I(background))
  type: int
summary:
  description: One line with the archive's size, the bytes sent, the seconds and the throughput.
  returned: when the push ran (not when started in the background)
  type: str
  sample: "registry.example.com/datarobot/pps:9.2.0: pushed, 3.41 GB archive, 1.20 GB sent in 95.3s (12.6 MB/s)"
"""

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._pps_push import run
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import RegistryModule

ARGUMENT_SPEC = dict(
    src=dict(type="path", required=True),
    source_image=dict(type="str"),
    name=dict(type="str", required=True),
    tag=dict(type="str", required=True),
    additional_tags=dict(type="list", elements="str", default=[]),
    method=dict(type="str", choices=["auto", "direct", "daemon"], default="auto"),
    docker_host=dict(type="str"),
    compression=dict(type="str", choices=["gzip", "none"], default="gzip"),
    compression_level=dict(type="int", default=1),
    workers=dict(type="int"),
    manifest_format=dict(type="str", choices=["auto", "docker", "oci"], default="auto"),
    mount_from=dict(type="list", elements="str", default=[]),
    cache=dict(type="path"),
    spool=dict(type="bool", default=True),
    spool_dir=dict(type="path"),
    spool_max_size=dict(type="int", default=16384),
    fleet=dict(type="list", elements="dict", default=[], options=dict(
        key=dict(type="str", required=True, no_log=False),
        name=dict(type="str", required=True),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        insecure=dict(type="bool", default=False),
    ), required_together=[("username", "password")]),
    retries=dict(type="int", default=5),
    timeout=dict(type="raw", default=300),
    progress_file=dict(type="path"),
    background=dict(type="bool", default=False),
    job_dir=dict(type="path"),
    background_timeout=dict(type="int", default=7200),
)


def main() -> None:
    module = RegistryModule(ARGUMENT_SPEC, supports_check_mode=True)
    module.run(lambda: run(module))


if __name__ == "__main__":
    main()
