# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the pps_image module does between its arguments and its result: check the target, then push now or start
the push in a detached worker (`_push_job`) that writes its progress and its result into a private directory."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping, NamedTuple

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import Compression
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import (
    BlobSpool,
    default_spool_dir,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._daemon_push import (
    HAS_DOCKER,
    DaemonPusher,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import Credentials
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._fleet_progress import FleetProgress
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._fleet_push import (
    destinations,
    fleet_diff,
    identity,
    push_all,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import ArchiveError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_push import (
    DirectPusher,
    PushResult,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    Repository,
    validate_tag,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_cache import (
    PushCache,
    default_cache_path,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_job import (
    PROGRESS,
    start_job,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    PushProgress,
    summary_line,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import RegistryClient
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import (
    RegistryModule,
    client_from_params,
)


class PpsPushError(MlopsError):
    """The push cannot be made as asked (a library the method needs is missing)."""


class Target(NamedTuple):
    """Where the push goes, checked before anything is sent (and before a background push starts)."""

    repository: Repository
    tags: list[str]
    client: RegistryClient
    credentials: Credentials | None


def _target(module: RegistryModule, name: str | None = None, params: Mapping[str, Any] | None = None) -> Target:
    """The repository and tags, and a registry client that may push there (asked now, so that a wrong login or
    address fails the task itself, in the background too). `name` and `params`: a fleet destination's."""
    options = module.params
    repository = Repository.parse(name or options["name"])
    tags = [validate_tag(options["tag"])] + [validate_tag(t) for t in options["additional_tags"]]
    if options["method"] == "daemon" and not HAS_DOCKER:
        raise PpsPushError(missing_required_lib("docker", reason="for method=daemon"))
    if params is None:
        client, credentials = module.registry_client(repository.registry)
    else:
        client, credentials, warning = client_from_params(repository.registry, params)
        if warning:
            module.warn(f"{name}: {warning}")
    client.check_access(repository.path)
    return Target(repository, tags, client, credentials)


def _pusher(module: RegistryModule, target: Target, progress: PushProgress) -> DirectPusher | DaemonPusher:
    """The pusher the parameters ask for."""
    params = module.params
    client, repository, tags = target.client, target.repository, target.tags
    if params["method"] == "daemon":
        return DaemonPusher(client, repository, tags, credentials=target.credentials,
                            docker_host=params["docker_host"], timeout=client.timeout, check_mode=module.check_mode,
                            progress=progress)
    cache_path = default_cache_path() if params["cache"] is None else (params["cache"] or None)
    return DirectPusher(
        client, repository, tags, compression=Compression(params["compression"], params["compression_level"]),
        workers=params["workers"], manifest_format=params["manifest_format"],
        mount_from=params["mount_from"], cache=PushCache(cache_path), check_mode=module.check_mode, progress=progress,
        spool=BlobSpool(params["spool_dir"] or default_spool_dir(), params["spool_max_size"] * 1024 * 1024,
                        required=bool(params["spool_dir"])) if params["spool"] else None)


def push(module: RegistryModule, target: Target, progress_file: str | None,
         fleet: FleetProgress | None = None) -> dict:
    """Push the archive the parameters name to `target`; the module's return values. An unreadable file is an
    ArchiveError; a cache that cannot be written is a warning (the push is done by then). In a fleet, the progress
    goes into the fleet's sum (`fleet`) instead of `progress_file`."""
    params = module.params
    size = os.path.getsize(params["src"]) if os.path.isfile(params["src"]) else 0
    progress = PushProgress(None if fleet else progress_file, f"{params['name']}:{params['tag']}", size)
    if fleet:
        fleet.join(progress)
    started = time.monotonic()
    try:
        pusher = _pusher(module, target, progress)
        result = pusher.push(params["src"], params["source_image"])
    except OSError as exc:
        raise ArchiveError(f"Cannot read {params['src']}: {exc.strerror or exc}") from exc
    finally:
        progress.remove()
    for warning in pusher.warnings if isinstance(pusher, DirectPusher) else []:
        module.warn(warning)  # with the result (a background push's too: the worker's `clean` collects them)
    output = _output(result, "daemon" if params["method"] == "daemon" else "direct", module._diff)
    seconds = result.elapsed or round(time.monotonic() - started, 3)
    output.update(archive_size=size, summary=summary_line(result.image, size, result.bytes_uploaded, seconds,
                                                          result.changed))
    return output


def _fleet_work(module: RegistryModule, own: Target | MlopsError) -> tuple[list[Target], Callable[[str | None], dict]]:
    """The fleet's targets (checked now, as the own one) and what pushes to all of them. The progress file holds
    the sum of all the pushes, under the own image and the count of the other registries."""
    params = module.params
    if params["method"] == "daemon":
        raise PpsPushError("fleet pushes from the archive itself: it needs method direct (or auto), not daemon.")
    checked: dict[str, Target | MlopsError] = {}
    images: dict[str, str] = {}
    first = {identity(params["name"], params): ""}  # "": the run's own
    same: dict[str, str] = {}  # a destination pushed to under another key already
    for destination in destinations(params):
        images[destination.key] = f"{destination.name}:{params['tag']}"
        same_as = first.setdefault(identity(destination.name, destination.params), destination.key)
        if same_as != destination.key:
            same[destination.key] = same_as
            continue
        try:
            checked[destination.key] = _target(module, destination.name, destination.params)
        except MlopsError as exc:
            checked[destination.key] = exc
    more = len(checked)
    others = f" and {more} more registr{'y' if more == 1 else 'ies'}" if more else ""
    label = f"{params['name']}:{params['tag']}{others}"

    def pushing(target: Target | MlopsError, progress: FleetProgress) -> Callable[[], dict]:
        def go() -> dict:
            if isinstance(target, MlopsError):
                raise target
            return push(module, target, None, progress)
        return go

    def work(progress_file: str | None) -> dict:
        progress = FleetProgress(progress_file, label)
        try:
            result = push_all(pushing(own, progress),
                              {key: pushing(target, progress) for key, target in checked.items()}, images, same)
        finally:
            progress.remove()
        if module._diff:
            result["diff"] = fleet_diff(result)
        return result

    return [t for t in [own, *checked.values()] if isinstance(t, Target)], work


def run(module: RegistryModule) -> dict:
    """Push now, or start the push in a detached worker (`background`) and return at once."""
    params = module.params
    if params["fleet"]:
        try:
            own: Target | MlopsError = _target(module)
        except MlopsError as exc:  # the fleet's pushes go on: the run fails at their end, with their entries
            own = exc
        targets, action = _fleet_work(module, own)
    else:
        targets = [_target(module)]

        def action(progress_file: str | None) -> dict:
            return push(module, targets[0], progress_file)
    if not params["background"] or module.check_mode:
        return action(params["progress_file"])
    for target in targets:
        target.client.close_connections()  # the worker opens its own; inherited sockets are closed when it detaches
    clean = module.worker_cleaner()  # the warnings given so far go with this task's own result

    def work(job_dir: str) -> dict:
        return action(params["progress_file"] or os.path.join(job_dir, PROGRESS))

    # Without job_dir, start_job makes one (0700, in the temporary directory) and names it in the result.
    return start_job(params["job_dir"], params["background_timeout"], work, clean)


def _output(result: PushResult, method: str, diff: bool) -> dict:
    """The module's return values for `result`."""
    output = dict(
        changed=result.changed, image=result.image, digest=result.digest, config_digest=result.config_digest,
        blobs_uploaded=result.blobs_uploaded, blobs_skipped=result.blobs_skipped, blobs_mounted=result.blobs_mounted,
        bytes_uploaded=result.bytes_uploaded, would_upload=result.would_upload,
        would_upload_bytes=result.would_upload_bytes, bytes_compressed=result.bytes_compressed, method=method,
        blobs_from_spool=result.blobs_from_spool, archive_bytes_read=result.archive_bytes_read,
        elapsed=result.elapsed,
    )
    if result.message:
        output["msg"] = result.message
    if diff:
        output["diff"] = dict(before=dict(image=result.image, digest=result.before or ""),
                              after=dict(image=result.image, digest=result.digest or "(unknown until pushed)"))
    return output
