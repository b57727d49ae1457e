# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The classic way, through a Docker API (docker, or podman's service): load, tag, push.

`DaemonPusher` answers like `DirectPusher` (`push() -> PushResult`), so the module picks one and calls it;
whether the tag already holds the image is asked of the registry first, so a no-op never touches the daemon.

`LocalImagePusher` pushes an image the Docker API already holds (one a build made), for the daemon_image_push module.

Either way the registry login goes to the Docker API only in the request that pushes (the SDK's `auth_config`, sent
as its X-Registry-Auth header): no `docker login`, so no docker config file ever holds it, and no child process gets
it on its command line or in its environment.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Archive, Image
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_result import (
    PushResult,
    TagState,
    already_pushed,
    tag_state,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import Masker
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    PushProgress,
    human_duration,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    Credentials,
    RegistryClient,
    RegistryError,
)

# Imported where it is used: the docker SDK adds about 60 ms of CPU to every run of the pps_image module, most of
# which push without a daemon.
HAS_DOCKER = importlib.util.find_spec("docker") is not None

# The end of a push as Docker (`aux.Digest` too) and podman's Docker API (only this line) report it.
DIGEST_STATUS = re.compile(r"\bdigest: (sha256:[0-9a-f]{64})\b")
# Docker's per-layer lines; podman's Docker API sends none.
LAYER_STATES = ("Preparing", "Waiting", "Pushing", "Pushed", "Layer already exists", "Retrying")
# What a Docker API says when it does not trust the registry's certificate or finds plain HTTP.
TRUST_WORDS = ("x509", "certificate", "tls: ", "http response to https client", "https client")
AUTH_WORDS = ("unauthorized", "authentication required", "denied", "forbidden")


class DaemonError(MlopsError):
    """The Docker API failed; the message says which endpoint and what it answered."""


def endpoint(docker_host: str | None) -> str:
    """The Docker API a client for `docker_host` talks to, for messages."""
    return docker_host or os.environ.get("DOCKER_HOST") or "the default Docker socket"


def connect(docker_host: str | None, timeout: int, hint: str = "") -> Any:
    """A docker SDK client for `docker_host` (else DOCKER_HOST, the CLI's context, the default socket), with
    DOCKER_TLS_VERIFY and DOCKER_CERT_PATH honoured as the docker CLI does; asks the API's version, so an endpoint
    that does not answer fails here."""
    import docker  # pylint: disable=import-outside-toplevel
    from docker.errors import DockerException  # pylint: disable=import-outside-toplevel

    environment = {**os.environ, "DOCKER_HOST": docker_host} if docker_host else None
    try:
        return docker.from_env(environment=environment, timeout=timeout)
    except DockerException as exc:
        raise DaemonError(f"Cannot reach the Docker API at {endpoint(docker_host)}: {exc}. Start the daemon (or "
                          f"podman's API service) or set docker_host (DOCKER_HOST){hint}.") from exc


def _timed_out(exc: BaseException) -> bool:
    """Whether the Docker API took longer than the client's timeout: requests' or urllib3's timeout, or requests'
    ConnectionError around urllib3's (what reading a streamed answer raises)."""
    from requests.exceptions import Timeout  # pylint: disable=import-outside-toplevel
    from urllib3.exceptions import TimeoutError as Urllib3Timeout  # pylint: disable=import-outside-toplevel

    return isinstance(exc, (Timeout, Urllib3Timeout)) or any(isinstance(arg, Urllib3Timeout) for arg in exc.args)


@contextmanager
def docker_session(client: Any, where: str, secrets: Iterable[str], timeout: int, timeout_option: str
                   ) -> Iterator[Any]:
    """`client` for the block: an SDK error in it becomes a DaemonError naming the endpoint, every secret masked, and
    the client is closed after, failed or not. The SDK lets the errors of requests and urllib3 through (a slow or a
    dropped connection): a timeout names `timeout_option`, the caller's option that set the client's `timeout`."""
    from docker.errors import APIError, DockerException  # pylint: disable=import-outside-toplevel
    from requests.exceptions import RequestException  # pylint: disable=import-outside-toplevel
    from urllib3.exceptions import HTTPError  # pylint: disable=import-outside-toplevel

    masker = Masker().add(*secrets)
    try:
        yield client
    except (APIError, DockerException) as exc:
        raise DaemonError(f"The Docker API at {where} failed: {masker.text(str(exc))}") from exc
    except (RequestException, HTTPError) as exc:
        if _timed_out(exc):
            raise DaemonError(f"The Docker API at {where} did not answer within {timeout} seconds ({timeout_option}"
                              f"; {type(exc).__name__}). podman's API says nothing until a push has ended: raise "
                              f"{timeout_option} for a push that takes longer, or check that the Docker API is up."
                              ) from exc
        raise DaemonError(f"The Docker API at {where} dropped the connection ({masker.text(str(exc))}): check that "
                          "the daemon (or podman's API service) is still running, then run again.") from exc
    finally:
        client.close()


def auth_config(credentials: Credentials | None) -> dict[str, str]:
    """The login as the push request carries it; {} (anonymous) rather than None, which would make the SDK look
    for a login in the docker config and its credential helpers itself."""
    return {"username": credentials.username, "password": credentials.password} if credentials else {}


@dataclass
class TagPush:
    """What pushing one tag through a Docker API did, as its answer stream said it."""

    digest: str = ""
    layers: dict[str, str] = field(default_factory=dict)  # layer id -> its last state (Docker only)

    @property
    def sent(self) -> int:
        return sum(1 for state in self.layers.values() if state == "Pushed")

    @property
    def existing(self) -> int:
        return sum(1 for state in self.layers.values() if state == "Layer already exists")

    @property
    def mounted(self) -> int:
        return sum(1 for state in self.layers.values() if state.startswith("Mounted from"))


def push_failure(image: str, where: str, detail: str) -> str:
    """The message of a push the Docker API refused, with what to check for the usual causes."""
    text = f"Pushing {image} through the Docker API at {where} failed: {detail.strip() or 'no reason given'}."
    lowered = detail.lower()
    if any(word in lowered for word in TRUST_WORDS):
        text += (" The Docker API connects to the registry itself, with its own trust: give it the registry's CA "
                 "(Docker: /etc/docker/certs.d/<host:port>/ca.crt; podman: /etc/containers/certs.d/<host:port>/), "
                 "or list a plain-HTTP registry as insecure (Docker: insecure-registries in daemon.json; podman: "
                 "registries.conf).")
    elif any(word in lowered for word in AUTH_WORDS):
        text += " Check the registry login (username, password) and that it may push to this repository."
    return text


class LayerCounter:
    """Tells a PushProgress what Docker's push stream says of each layer: its bytes as they go ("Pushing" with
    progressDetail), and its end (pushed, already there, mounted). podman's stream says none of it.

    Once Docker tells a layer's size, the bytes to push are the sizes of the layers it sends, not the image's: layers
    the registry has already (the base layers the two agent images share) are never sent, and would keep the percent
    low and the time left long until the end."""

    def __init__(self, progress: PushProgress) -> None:
        self.progress = progress
        self.seen: dict[str, int] = {}  # layer id -> bytes told so far
        self.sizes: dict[str, int] = {}  # layer id -> its size, once the stream gave it
        self.ended: set[str] = set()

    def event(self, layer: str, status: str, detail: Any) -> None:
        if status == "Preparing" and layer not in self.seen:
            self.seen[layer] = 0
            self.progress.expect_blobs(len(self.seen))
        elif status == "Pushing" and isinstance(detail, dict):
            total = detail.get("total")
            if isinstance(total, int) and total > 0 and self.sizes.get(layer) != total:
                self.sizes[layer] = total
                self.progress.expect_bytes(sum(self.sizes.values()))
            current = detail.get("current")
            if isinstance(current, int):
                self._tell(layer, current)
        elif layer not in self.ended and (status in ("Pushed", "Layer already exists")
                                          or status.startswith("Mounted from")):
            self.ended.add(layer)
            if status == "Pushed":
                self._tell(layer, self.sizes.get(layer, self.seen.get(layer, 0)))
            self.progress.blob(skipped=status != "Pushed", mounted=status.startswith("Mounted from"))

    def _tell(self, layer: str, current: int) -> None:
        more = current - self.seen.get(layer, 0)
        if more > 0:
            self.seen[layer] = current
            self.progress.read(more)
            self.progress.sent(more)


def push_tag(api: Any, name: str, tag: str, auth: dict[str, str], where: str,
             secrets: Iterable[str] = (), progress: PushProgress | None = None) -> TagPush:
    """Push `name`:`tag` through the Docker API client `api` (the SDK's low-level APIClient), reading its answer
    stream to the end, and telling `progress` what it says of the layers; an error in it is a RegistryError with
    every secret masked."""
    masker = Masker().add(*secrets)
    pushed = TagPush()
    counter = LayerCounter(progress) if progress else None
    for event in api.push(name, tag, auth_config=auth, stream=True, decode=True):
        if not isinstance(event, dict):
            continue
        if event.get("error") or event.get("errorDetail"):
            detail = str(event.get("error") or (event.get("errorDetail") or {}).get("message", ""))
            raise RegistryError(push_failure(f"{name}:{tag}", where, masker.text(detail)))
        pushed.digest = str((event.get("aux") or {}).get("Digest") or pushed.digest)
        status = str(event.get("status") or "")
        found = DIGEST_STATUS.search(status)
        if found:
            pushed.digest = found[1]
        layer = event.get("id")
        if layer and (status in LAYER_STATES or status.startswith(("Mounted from", "Retrying"))):
            pushed.layers[str(layer)] = status
            if counter:
                counter.event(str(layer), status, event.get("progressDetail"))
    return pushed


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
    where = endpoint(docker_host)
    secrets = [credentials.password] if credentials else []
    with docker_session(connect(docker_host, timeout, ", or use method: direct, which needs no daemon"), where,
                        secrets, timeout, "timeout") as client:  # pps_image's option
        # Streamed, never read into memory. podman's Docker API cannot read gzip archives (Docker can): we
        # decompress on the way, which suits both.
        with archive.open_stream() as stream:
            loaded = client.images.load(stream)
        local = next((i for i in loaded if i.id == image.config_digest), None)
        if local is None:
            raise DaemonError(f"The Docker API at {where} loaded {[i.id for i in loaded]}, not image "
                              f"{image.config_digest} from {archive.path}.")
        if progress:
            progress.phase("pushing")
        digest = ""
        for tag in tags:
            local.tag(str(repository), tag)
            digest = push_tag(client.api, str(repository), tag, auth_config(credentials), where, secrets).digest or digest
        return {"digest": digest, "loaded": local.id}


def holds(state: TagState, image_id: str, repo_digests: Iterable[str], names: Iterable[str]) -> bool:
    """Whether the tag (`state`) points at the local image: its config is the image (Docker's classic store and
    podman name an image by its config digest), its manifest is (Docker's containerd store names it by that), or the
    Docker API recorded that manifest for this repository when it pushed or pulled the image (RepoDigests)."""
    if not state.digest:
        return False
    if image_id and image_id in (state.config_digest, state.digest):
        return True
    wanted = {f"{name}@{state.digest}" for name in names}
    return any(entry in wanted for entry in repo_digests)


@dataclass
class LocalPush:
    """What `LocalImagePusher.push` found and did."""

    image: str  # name:tag in the registry
    source: str  # the local image pushed
    image_id: str
    changed: bool
    before: str | None  # the tag's manifest digest before, None when it did not exist
    digest: str = ""  # the tag's manifest digest after ("" in check mode when it would change)
    tagged: bool = False  # the local image was (or, in check mode, would be) tagged as `image` first
    built: bool = True  # the Docker API holds `source` (check mode may ask before it is built)
    layers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        """One line for people: what happened to the image, how long it took, and the layers when Docker named them
        (podman's API does not)."""
        if not self.changed:
            return f"{self.image}: already in the registry"
        if not self.digest:  # check mode
            return f"{self.image}: would be pushed" + ("" if self.built else f" once {self.source} is built")
        pushed = TagPush(layers=self.layers)
        counts = (f" ({len(self.layers)} layers: {pushed.sent} sent, {pushed.existing} already there, "
                  f"{pushed.mounted} mounted)") if self.layers else ""
        return f"{self.image}: pushed in {human_duration(self.seconds)}{counts}"

    def as_result(self, diff: bool) -> dict[str, Any]:
        """The module's return values."""
        pushed = TagPush(layers=self.layers)
        result: dict[str, Any] = dict(
            changed=self.changed, image=self.image, source=self.source, image_id=self.image_id, digest=self.digest,
            before=self.before or "", tagged=self.tagged, layers_sent=pushed.sent, layers_existing=pushed.existing,
            layers_mounted=pushed.mounted, seconds=round(self.seconds, 1), summary=self.summary)
        if self.changed and not self.digest:
            result["msg"] = self.summary
        if diff:
            result["diff"] = dict(before=dict(image=self.image, digest=self.before or ""),
                                  after=dict(image=self.image, digest=self.digest or "(unknown until pushed)"))
        return result


class LocalImagePusher:
    """Pushes an image a Docker API holds to `name`:`tag`, unless the registry's tag already holds it.

    The registry client (Basic or token auth, the registry's CA) only reads: whether the tag exists and what it points
    at, before and after. The push itself is the Docker API's, with the login passed in memory (`auth_config`).
    """

    def __init__(self, registry: RegistryClient, name: str, tag: str, *, source: str | None = None,
                 credentials: Credentials | None = None, docker_host: str | None = None, timeout: int = 3600,
                 check_mode: bool = False, connector: Callable[[str | None, int], Any] = connect,
                 clock: Callable[[], float] = time.monotonic, progress: PushProgress | None = None) -> None:
        self.registry, self.repository, self.name, self.tag = registry, Repository.parse(name), name, tag
        self.target = f"{name}:{tag}"
        self.source = source or self.target
        self.credentials, self.docker_host, self.timeout = credentials, docker_host, timeout
        self.check_mode, self.connector, self.clock = check_mode, connector, clock
        self.progress = progress or PushProgress(None)

    def push(self) -> LocalPush:
        from docker.errors import ImageNotFound  # pylint: disable=import-outside-toplevel

        where = endpoint(self.docker_host)
        secrets = [self.credentials.password] if self.credentials else []
        before = tag_state(self.registry, self.repository, self.tag)
        with docker_session(self.connector(self.docker_host, self.timeout), where, secrets, self.timeout,
                            "push_timeout") as client:  # daemon_image_push's option
            try:
                local = client.images.get(self.source)
            except ImageNotFound as exc:
                if self.check_mode:  # asked before the build that makes it: the real run pushes it then
                    self.registry.check_access(self.repository.path)
                    return LocalPush(self.target, self.source, "", True, before.digest, built=False,
                                     tagged=self.source != self.target)
                raise DaemonError(f"The Docker API at {where} has no image {self.source} to push: build it first, or "
                                  "give the image's name or ID as source. Builds that went to another Docker API "
                                  "(DOCKER_HOST, a docker context) are not seen here: give that one as "
                                  "docker_host.") from exc
            attrs = local.attrs or {}
            names = {self.name, str(self.repository)}
            if holds(before, local.id, attrs.get("RepoDigests") or [], names):
                return LocalPush(self.target, self.source, local.id, False, before.digest, before.digest or "")
            self.registry.check_access(self.repository.path)  # a login that may not push fails here, clearly
            tagged = self.target not in (local.tags or [])
            if self.check_mode:
                return LocalPush(self.target, self.source, local.id, True, before.digest, tagged=tagged)
            started = self.clock()
            if tagged and not local.tag(self.name, self.tag):
                raise DaemonError(f"The Docker API at {where} did not tag {self.source} as {self.target}.")
            size = attrs.get("Size")
            self.progress.expect_bytes(size if isinstance(size, int) and size > 0 else 0)
            self.progress.phase("pushing")
            pushed = push_tag(client.api, self.name, self.tag, auth_config(self.credentials), where, secrets,
                              self.progress)
            seconds = self.clock() - started
        after = tag_state(self.registry, self.repository, self.tag)
        if not after.digest:
            raise RegistryError(f"The Docker API at {where} pushed {self.target}, but the registry "
                                f"{self.repository.registry} has no such tag: is the Docker API pushing to another "
                                "registry of that name (a mirror, a proxy)?")
        self.progress.finish()
        return LocalPush(self.target, self.source, local.id, True, before.digest, after.digest, tagged,
                         layers=pushed.layers, seconds=seconds)
