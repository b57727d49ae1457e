"""LocalImagePusher (the daemon_image_push module's logic) against a fake Docker API and a fake registry: the tag is
compared first, the login goes to the Docker API only as the push request's auth_config, Docker's and podman's
answer streams are both read, and every failure names what to check without the password."""

from __future__ import annotations

import json
from typing import Any

import pytest
from docker.errors import APIError, ImageNotFound

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._daemon_push import (
    DaemonError,
    LocalImagePusher,
    TagPush,
    auth_config,
    holds,
    push_failure,
    push_tag,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import Credentials
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    PushProgress,
    parse_status,
    progress_line,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_result import TagState
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import RegistryError

NAME, TAG = "registry.example:5000/acme/datarobot/mlops-management-agent", "9.2.0"
IMAGE_ID = "sha256:" + "1" * 64
OTHER_ID = "sha256:" + "2" * 64
MANIFEST = "sha256:" + "a" * 64
PUSHED = "sha256:" + "b" * 64
SECRET = "s3cr3t-Pa55word"
LOGIN = Credentials("ci", SECRET)


def manifest_body(config: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "config": {"digest": config}, "layers": []}).encode()


class FakeRegistry:
    """The registry client as LocalImagePusher uses it: the tag's manifest, before and after; push access."""

    def __init__(self, *states: tuple[str, str] | None, refuse: Exception | None = None) -> None:
        self.states = list(states)  # (manifest digest, config digest) or None, one per look
        self.refuse = refuse
        self.looks: list[tuple[str, str]] = []
        self.access: list[str] = []

    def manifest(self, repository: str, reference: str) -> tuple[str, str, bytes] | None:
        self.looks.append((repository, reference))
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state is None:
            return None
        return state[0], "application/vnd.docker.distribution.manifest.v2+json", manifest_body(state[1])

    def check_access(self, repository: str) -> None:
        self.access.append(repository)
        if self.refuse:
            raise self.refuse


class FakeImage:
    def __init__(self, image_id: str, tags: list[str], repo_digests: list[str] | None = None,
                 tag_ok: bool = True) -> None:
        self.id, self.tags = image_id, tags
        self.attrs = {"Id": image_id, "RepoTags": tags, "RepoDigests": repo_digests or []}
        self.tag_ok = tag_ok
        self.tagged: list[tuple[str, str]] = []

    def tag(self, repository: str, tag: str) -> bool:
        self.tagged.append((repository, tag))
        return self.tag_ok


class FakeImages:
    def __init__(self, images: dict[str, FakeImage]) -> None:
        self.images = images

    def get(self, name: str) -> FakeImage:
        if name not in self.images:
            raise ImageNotFound(f"No such image: {name}")
        return self.images[name]


class FakeApi:
    def __init__(self, events: list[Any] | Exception) -> None:
        self.events = events
        self.pushes: list[tuple[str, str, Any]] = []

    def push(self, name: str, tag: str, *, auth_config: Any, stream: bool, decode: bool) -> Any:
        assert stream and decode
        self.pushes.append((name, tag, auth_config))
        if isinstance(self.events, Exception):
            raise self.events
        return iter(self.events)


class FakeDocker:
    def __init__(self, images: dict[str, FakeImage], events: list[Any] | Exception = ()) -> None:
        self.images = FakeImages(images)
        self.api = FakeApi(list(events) if isinstance(events, (list, tuple)) else events)
        self.closed = False
        self.connected: list[tuple[str | None, int]] = []

    def connect(self, docker_host: str | None, timeout: int) -> "FakeDocker":
        self.connected.append((docker_host, timeout))
        return self

    def close(self) -> None:
        self.closed = True


DOCKER_EVENTS = [
    {"status": f"The push refers to repository [{NAME}]"},
    {"status": "Preparing", "progressDetail": {}, "id": "aaaaaaaaaaaa"},
    {"status": "Preparing", "progressDetail": {}, "id": "bbbbbbbbbbbb"},
    {"status": "Preparing", "progressDetail": {}, "id": "cccccccccccc"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 1024}, "id": "aaaaaaaaaaaa"},
    {"status": "Pushed", "progressDetail": {}, "id": "aaaaaaaaaaaa"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "bbbbbbbbbbbb"},
    {"status": "Mounted from acme/other", "progressDetail": {}, "id": "cccccccccccc"},
    {"status": f"{TAG}: digest: {PUSHED} size: 945"},
    {"progressDetail": {}, "aux": {"Tag": TAG, "Digest": PUSHED, "Size": 945}},
]
PODMAN_EVENTS = [{"status": f"The push refers to repository [{NAME}:{TAG}]"},
                 {"status": f"{TAG}: digest: {PUSHED} size: 423"}]


def pusher(registry: FakeRegistry, docker: FakeDocker, **options: Any) -> LocalImagePusher:
    ticks = iter(range(0, 1000, 7))
    return LocalImagePusher(registry, NAME, TAG, connector=docker.connect, clock=lambda: float(next(ticks)),
                            **{"credentials": LOGIN, "docker_host": "unix:///run/podman.sock", **options})


def test_a_tag_that_holds_the_image_is_neither_tagged_nor_pushed():
    registry = FakeRegistry((MANIFEST, IMAGE_ID))  # the config digest is the local image's ID
    image = FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])
    docker = FakeDocker({f"{NAME}:{TAG}": image})
    result = pusher(registry, docker).push()
    assert (result.changed, result.digest, result.before, result.tagged) == (False, MANIFEST, MANIFEST, False)
    assert docker.api.pushes == [] and image.tagged == [] and registry.access == []
    assert docker.closed
    assert result.summary == f"{NAME}:{TAG}: already in the registry"
    assert result.as_result(diff=False)["changed"] is False


@pytest.mark.parametrize(("state", "image_id", "repo_digests"), [
    (TagState(MANIFEST, IMAGE_ID), IMAGE_ID, []),                         # Docker's classic store, podman
    (TagState(MANIFEST, None), MANIFEST, []),                             # Docker's containerd store: an index
    (TagState(MANIFEST, OTHER_ID), IMAGE_ID, [f"{NAME}@{MANIFEST}"]),     # the Docker API pushed it there before
], ids=["config-digest", "manifest-digest", "repo-digest"])
def test_the_tag_holds_the_local_image(state, image_id, repo_digests):
    assert holds(state, image_id, repo_digests, {NAME})


@pytest.mark.parametrize(("state", "repo_digests"), [
    (TagState(None, None), [f"{NAME}@{MANIFEST}"]),                        # no tag
    (TagState(MANIFEST, OTHER_ID), []),                                    # another image
    (TagState(MANIFEST, OTHER_ID), [f"registry.example:5000/other@{MANIFEST}"]),  # that manifest, elsewhere
])
def test_the_tag_does_not_hold_the_local_image(state, repo_digests):
    assert not holds(state, IMAGE_ID, repo_digests, {NAME})


def test_the_push_hands_the_login_to_the_docker_api_in_memory_and_counts_dockers_layers():
    registry = FakeRegistry(None, (PUSHED, IMAGE_ID))  # no tag before; the pushed one after
    image = FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])
    docker = FakeDocker({f"{NAME}:{TAG}": image}, DOCKER_EVENTS)
    result = pusher(registry, docker, timeout=1234).push()
    assert docker.connected == [("unix:///run/podman.sock", 1234)]
    assert docker.api.pushes == [(NAME, TAG, {"username": "ci", "password": SECRET})]
    assert image.tagged == []  # the build named it so already
    assert registry.access == ["acme/datarobot/mlops-management-agent"]
    assert (result.changed, result.before, result.digest, result.image_id) == (True, None, PUSHED, IMAGE_ID)
    assert result.summary == f"{NAME}:{TAG}: pushed in 7s (3 layers: 1 sent, 1 already there, 1 mounted)"
    output = result.as_result(diff=True)
    assert (output["layers_sent"], output["layers_existing"], output["layers_mounted"]) == (1, 1, 1)
    assert output["diff"] == {"before": {"image": f"{NAME}:{TAG}", "digest": ""},
                              "after": {"image": f"{NAME}:{TAG}", "digest": PUSHED}}
    assert SECRET not in json.dumps(output)
    assert docker.closed


def test_podmans_answer_names_no_layers_only_the_digest():
    pushed = push_tag(FakeApi(PODMAN_EVENTS), NAME, TAG, {}, "unix:///run/podman.sock")
    assert pushed == TagPush(PUSHED, {})
    registry = FakeRegistry((MANIFEST, OTHER_ID), (PUSHED, IMAGE_ID))
    docker = FakeDocker({f"{NAME}:{TAG}": FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])}, PODMAN_EVENTS)
    result = pusher(registry, docker).push()
    assert (result.changed, result.before, result.digest) == (True, MANIFEST, PUSHED)
    assert result.summary == f"{NAME}:{TAG}: pushed in 7s"


def test_a_build_named_otherwise_is_tagged_first():
    source = "registry.example:5000/datarobot/mlops-management-agent:9.2.0"
    image = FakeImage(IMAGE_ID, [source])
    docker = FakeDocker({source: image}, PODMAN_EVENTS)
    result = pusher(FakeRegistry(None, (PUSHED, IMAGE_ID)), docker, source=source).push()
    assert image.tagged == [(NAME, TAG)]
    assert docker.api.pushes[0][:2] == (NAME, TAG)
    assert result.tagged and result.source == source


def test_a_tag_the_docker_api_refuses_is_an_error():
    source = "local/build:1"
    docker = FakeDocker({source: FakeImage(IMAGE_ID, [source], tag_ok=False)}, PODMAN_EVENTS)
    with pytest.raises(DaemonError, match=f"did not tag {source} as {NAME}:{TAG}"):
        pusher(FakeRegistry(None), docker, source=source).push()
    assert docker.api.pushes == []


def test_an_anonymous_push_sends_an_empty_login_so_the_sdk_reads_no_docker_config():
    assert auth_config(None) == {}
    docker = FakeDocker({f"{NAME}:{TAG}": FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])}, PODMAN_EVENTS)
    pusher(FakeRegistry(None, (PUSHED, IMAGE_ID)), docker, credentials=None).push()
    assert docker.api.pushes[0][2] == {}


def test_check_mode_reads_only_and_says_what_a_run_would_do():
    source = "registry.example:5000/datarobot/mlops-management-agent:9.2.0"
    image = FakeImage(IMAGE_ID, [source])
    docker = FakeDocker({source: image}, PODMAN_EVENTS)
    registry = FakeRegistry((MANIFEST, OTHER_ID))
    result = pusher(registry, docker, source=source, check_mode=True).push()
    assert docker.api.pushes == [] and image.tagged == []
    assert registry.access == ["acme/datarobot/mlops-management-agent"]  # the login may push: checked
    assert (result.changed, result.tagged, result.digest, result.before) == (True, True, "", MANIFEST)
    output = result.as_result(diff=True)
    assert output["msg"] == f"{NAME}:{TAG}: would be pushed"
    assert output["diff"]["after"]["digest"] == "(unknown until pushed)"


def test_check_mode_before_the_build_reports_the_push_to_come():
    """The role checks the pushes before it builds: the image is not there yet, the login is checked all the same."""
    registry = FakeRegistry(None)
    docker = FakeDocker({})
    result = pusher(registry, docker, source="registry.example:5000/datarobot/x:9.2.0", check_mode=True).push()
    assert (result.changed, result.built, result.image_id) == (True, False, "")
    assert registry.access == ["acme/datarobot/mlops-management-agent"]
    assert result.summary == f"{NAME}:{TAG}: would be pushed once registry.example:5000/datarobot/x:9.2.0 is built"


def test_check_mode_before_the_build_still_fails_on_a_login_that_may_not_push():
    refusal = RegistryError("Registry registry.example:5000 rejected the credentials for user 'ci'.")
    with pytest.raises(RegistryError, match="rejected the credentials"):
        pusher(FakeRegistry(None, refuse=refusal), FakeDocker({}), check_mode=True).push()


def test_an_image_the_docker_api_does_not_hold_is_named_with_what_to_do():
    docker = FakeDocker({})
    with pytest.raises(DaemonError) as caught:
        pusher(FakeRegistry(None), docker).push()
    message = str(caught.value)
    assert f"has no image {NAME}:{TAG} to push" in message and "docker_host" in message
    assert "unix:///run/podman.sock" in message
    assert docker.closed


def test_a_refused_push_names_the_trust_to_fix_without_the_password():
    events = [{"status": "The push refers to repository [x]"},
              {"errorDetail": {"message": f"Get https://registry.example:5000/v2/: x509: certificate signed by unknown "
                                          f"authority (login {SECRET})"},
               "error": f"x509: certificate signed by unknown authority (login {SECRET})"}]
    docker = FakeDocker({f"{NAME}:{TAG}": FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])}, events)
    with pytest.raises(RegistryError) as caught:
        pusher(FakeRegistry(None), docker).push()
    message = str(caught.value)
    assert SECRET not in message
    assert f"Pushing {NAME}:{TAG} through the Docker API at unix:///run/podman.sock failed: x509" in message
    assert "certs.d" in message and "insecure" in message
    assert docker.closed


def test_a_refused_login_says_to_check_it():
    message = push_failure(f"{NAME}:{TAG}", "the default Docker socket", "unauthorized: authentication required")
    assert message.endswith("Check the registry login (username, password) and that it may push to this repository.")
    assert "certs.d" not in message


def test_a_failing_docker_api_is_a_daemon_error_without_the_password():
    docker = FakeDocker({f"{NAME}:{TAG}": FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])},
                        APIError(f"500 Server Error: push failed for {SECRET}"))
    with pytest.raises(DaemonError) as caught:
        pusher(FakeRegistry(None), docker).push()
    assert "The Docker API at unix:///run/podman.sock failed" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_push_the_registry_then_does_not_show_is_an_error():
    docker = FakeDocker({f"{NAME}:{TAG}": FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])}, PODMAN_EVENTS)
    with pytest.raises(RegistryError, match="has no such tag"):
        pusher(FakeRegistry(None, None), docker).push()


def test_the_answer_stream_keeps_the_last_state_of_each_layer_and_skips_odd_events():
    events = ["not a dict", {"status": "Preparing", "id": "aaaaaaaaaaaa"},
              {"status": "Retrying in 5 seconds", "id": "aaaaaaaaaaaa"}, {"status": "Pushed", "id": "aaaaaaaaaaaa"},
              {"status": "Waiting", "id": "bbbbbbbbbbbb"}, {"status": "Layer already exists", "id": "bbbbbbbbbbbb"},
              {"status": "some other note", "id": "cccccccccccc"}]
    pushed = push_tag(FakeApi(events), NAME, TAG, {}, "here")
    assert pushed.layers == {"aaaaaaaaaaaa": "Pushed", "bbbbbbbbbbbb": "Layer already exists"}
    assert (pushed.sent, pushed.existing, pushed.mounted, pushed.digest) == (1, 1, 0, "")


class RecordedProgress(PushProgress):
    """A PushProgress that keeps a copy of its state each time it changes."""

    def __init__(self) -> None:
        super().__init__(None, image=f"{NAME}:{TAG}")
        self.states: list[dict[str, Any]] = []

    def write(self, force: bool = False) -> None:
        self.states.append(self.snapshot())


DOCKER_BYTES = [
    {"status": "Preparing", "progressDetail": {}, "id": "aaaaaaaaaaaa"},
    {"status": "Preparing", "progressDetail": {}, "id": "bbbbbbbbbbbb"},
    {"status": "Preparing", "progressDetail": {}, "id": "cccccccccccc"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "cccccccccccc"},
    {"status": "Pushing", "progressDetail": {"current": 400, "total": 1000}, "id": "aaaaaaaaaaaa"},
    {"status": "Pushing", "progressDetail": {"current": 100, "total": 500}, "id": "bbbbbbbbbbbb"},
    {"status": "Pushing", "progressDetail": {"current": 900, "total": 1000}, "id": "aaaaaaaaaaaa"},
    {"status": "Pushed", "progressDetail": {}, "id": "aaaaaaaaaaaa"},
    {"status": "Pushing", "progressDetail": {"current": 300, "total": 500}, "id": "bbbbbbbbbbbb"},
    {"status": "Pushed", "progressDetail": {}, "id": "bbbbbbbbbbbb"},
    {"status": "Pushed", "progressDetail": {}, "id": "bbbbbbbbbbbb"},  # told twice: counted once
    {"status": f"{TAG}: digest: {PUSHED} size: 945"},
]


def test_dockers_byte_counts_and_layer_ends_feed_the_progress_as_they_come():
    progress = RecordedProgress()
    progress.expect_bytes(1600)
    progress.phase("pushing")
    push_tag(FakeApi(DOCKER_BYTES), NAME, TAG, {}, "unix:///var/run/docker.sock", progress=progress)
    done = [state["bytes_done"] for state in progress.states]
    assert done == sorted(done) and done[-1] == 1500  # rising; both pushed layers whole, the skipped one not read
    last = progress.states[-1]
    assert (last["blobs_total"], last["blobs_done"], last["blobs_skipped"], last["blobs_mounted"]) == (3, 3, 1, 0)
    assert last["bytes_sent"] == 1500
    middle = next(state for state in progress.states if state["bytes_done"] == 500)  # 400 of a + 100 of b
    line = progress_line(middle, now=middle["sending_since"] + 10)
    # of the bytes Docker sends (the layers' sizes it told), not the image's 1.6 kB: the layer already there is not sent
    assert line == (f"{NAME}:{TAG}: 33% 500 B of 1.5 kB, 0.0 MB/s, about 20s left (pushing through the Docker API); "
                    "blobs 1 of 3 done (0 mounted, 1 skipped)")
    assert (last["bytes_done"], last["bytes_total"]) == (1500, 1500)  # all of it before the push's end


def test_a_podman_push_tells_only_that_it_is_pushing_and_for_how_long(tmp_path):
    path = tmp_path / "progress.json"
    registry = FakeRegistry((MANIFEST, OTHER_ID), (PUSHED, IMAGE_ID))
    image = FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])
    image.attrs["Size"] = 301_200_000
    seen: list[str] = []

    class Watching(FakeApi):
        def push(self, name: str, tag: str, **kwargs: Any) -> Any:  # what a watcher reads while podman pushes
            status = parse_status(path.read_text())
            seen.append(progress_line(status, now=status["sending_since"] + 75))
            return super().push(name, tag, **kwargs)

    docker = FakeDocker({f"{NAME}:{TAG}": image})
    docker.api = Watching(PODMAN_EVENTS)
    progress = PushProgress(str(path), image=f"{NAME}:{TAG}")
    result = pusher(registry, docker, progress=progress).push()
    assert seen == [f"{NAME}:{TAG}: pushing through the Docker API for 1m15s (301.2 MB)"]
    assert result.changed and parse_status(path.read_text())["phase"] == "done"


def test_a_push_that_changes_nothing_writes_no_pushing_phase(tmp_path):
    path = tmp_path / "progress.json"
    registry = FakeRegistry((MANIFEST, IMAGE_ID))
    docker = FakeDocker({f"{NAME}:{TAG}": FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])})
    pusher(registry, docker, progress=PushProgress(str(path), image=f"{NAME}:{TAG}")).push()
    assert not path.exists() or parse_status(path.read_text())["phase"] != "pushing"


def _timeouts_and_cuts():
    import requests
    import urllib3

    read_timeout = urllib3.exceptions.ReadTimeoutError(None, "/push", "Read timed out.")
    return {
        "requests-timeout": (requests.exceptions.ReadTimeout(f"Read timed out. {SECRET}"), True),
        "stream-timeout": (requests.exceptions.ConnectionError(read_timeout), True),  # iter_content's wrapping
        "urllib3-timeout": (read_timeout, True),
        "connection-reset": (requests.exceptions.ConnectionError(f"Connection aborted. {SECRET}"), False),
        "protocol-error": (urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"), False),
    }


@pytest.mark.parametrize("name", list(_timeouts_and_cuts()))
def test_a_slow_or_dropped_docker_api_is_a_daemon_error_naming_what_to_do(name):
    """A push longer than push_timeout (podman says nothing until it has ended) or a connection the daemon drops."""
    error, timed_out = _timeouts_and_cuts()[name]
    docker = FakeDocker({f"{NAME}:{TAG}": FakeImage(IMAGE_ID, [f"{NAME}:{TAG}"])}, error)
    with pytest.raises(DaemonError, match=r"^The Docker API at unix:///run/podman\.sock ") as caught:
        pusher(FakeRegistry(None), docker).push()
    message = str(caught.value)
    assert SECRET not in message and docker.closed
    if timed_out:
        assert "did not answer within 3600 seconds (push_timeout;" in message and "raise push_timeout" in message
    else:
        assert "dropped the connection" in message and "push_timeout" not in message


def test_the_timeout_named_is_the_callers_option():
    """pps_image's method: daemon sets the Docker API's timeout with its timeout option."""
    import requests

    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._daemon_push import docker_session

    docker = FakeDocker({})
    with pytest.raises(DaemonError, match=r"did not answer within 300 seconds \(timeout; .*raise timeout "):
        with docker_session(docker, "tcp://builder:2376", [], 300, "timeout"):
            raise requests.exceptions.ReadTimeout("Read timed out.")
