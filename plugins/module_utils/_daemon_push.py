# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The classic way, through a Docker API (docker, or podman's service): load, tag, push.

`DaemonPusher` answers like `DirectPusher` (`push() -> PushResult`), so the module picks one and calls it;
whether the tag already holds the image is asked of the registry first, so a no-op never touches the daemon.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Archive, Image
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_result import (
    PushResult,
    already_pushed,
    tag_state,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import Masker
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import PushProgress
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    Credentials,
    RegistryClient,
    RegistryError,
)

# Imported where it is used: the docker SDK adds about 60 ms of CPU to every run of the pps_image module, most of
# which push without a daemon.
HAS_DOCKER = importlib.util.find_spec("docker") is not None


class DaemonError(MlopsError):
    """The Docker API failed; the message says which endpoint and what it answered."""


class DaemonPusher:
    """Pushes one image of an archive through a Docker API; the registry client only reads tags."""

    def __init__(self, client: RegistryClient, repository: Repository, tags: list[str], *,
                 credentials: Credentials | None = None, docker_host: str | None = None, timeout: int = 300,
                 check_mode: bool = False, progress: PushProgress | None = None) -> None:
        self.client, self.repository, self.tags = client, repository, tags
        self.credentials, self.docker_host, self.timeout = credentials, docker_host, timeout
        self.check_mode, self.progress = check_mode, progress or PushProgress(None)

    def push(self, archive_path: str, source_image: str | None = None) -> PushResult:
        """Load, tag and push unless every tag already holds the archive's image."""
        before, live_config = tag_state(self.client, self.repository, self.tags[0])
        archive = Archive.scan(archive_path)
        image = archive.select(source_image)
        unchanged = already_pushed(self.client, self.repository, self.tags, before, live_config,
                                   image.config_digest, len(image.layers) + 1)
        if unchanged:
            return unchanged
        result = PushResult(f"{self.repository}:{self.tags[0]}", "", image.config_digest, True, before)
        if self.check_mode:
            result.would_upload = ["(load, tag and push through the Docker API)"]
            return result
        archive.on_read = self.progress.read
        self.progress.phase("loading")
        pushed = push_with_daemon(archive, image, self.repository, self.tags, self.credentials, self.docker_host,
                                  self.timeout, self.progress)
        result.digest = pushed["digest"]
        self.progress.finish()
        return result


def push_with_daemon(archive: Archive, image: Image, repository: Repository, tags: list[str],
                     credentials: Credentials | None, docker_host: str | None, timeout: int,
                     progress: PushProgress | None = None) -> dict[str, Any]:
    """Load the archive into the daemon, tag the image, push every tag; returns the pushed manifest digest."""
    import docker  # pylint: disable=import-outside-toplevel
    from docker.errors import APIError, DockerException  # pylint: disable=import-outside-toplevel

    where = docker_host or "the default Docker socket"
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=timeout) if docker_host else \
            docker.from_env(timeout=timeout)
    except DockerException as exc:
        raise DaemonError(f"Cannot reach the Docker API at {where}: {exc}. Start the daemon or set docker_host "
                          "(DOCKER_HOST), or use method: direct, which needs no daemon.") from exc
    try:
        # Streamed, never read into memory. podman's Docker API cannot read gzip archives (Docker can): we
        # decompress on the way, which suits both.
        with archive.open_stream() as stream:
            loaded = client.images.load(stream)
        local = next((i for i in loaded if i.id == image.config_digest), None)
        if local is None:
            raise DaemonError(f"The Docker API at {where} loaded {[i.id for i in loaded]}, not image "
                              f"{image.config_digest} from {archive.path}.")
        auth = {"username": credentials.username, "password": credentials.password} if credentials else None
        if progress:
            progress.phase("pushing")
        digest = ""
        for tag in tags:
            local.tag(str(repository), tag)
            for event in client.images.push(str(repository), tag, auth_config=auth, stream=True, decode=True):
                if "error" in event or "errorDetail" in event:
                    detail = event.get("error") or event.get("errorDetail", {}).get("message", "")
                    if credentials:
                        detail = Masker().add(credentials.password).text(detail)
                    raise RegistryError(f"Pushing {repository}:{tag} through the Docker API at {where} failed: "
                                        f"{detail}")
                digest = (event.get("aux") or {}).get("Digest", digest)
        return {"digest": digest, "loaded": local.id}
    except (APIError, DockerException) as exc:
        raise DaemonError(f"The Docker API at {where} failed: {exc}") from exc
    finally:
        client.close()
