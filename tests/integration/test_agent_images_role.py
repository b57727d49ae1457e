"""The agent_images role (and agent_tarball under it) on the rig: TLS registry, podman's Docker API.

Every test uses its own VERSION tag and repository prefix, so tests sharing the rig never see each
other's images; what they push is deleted from the registry and podman's store afterwards.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import stat
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from ansible_cli import ansible_env, run_module, run_playbook
from fixtures.agent_tarball import build_agent_tarball
from fixtures.image_archives import write_docker_archive
from token_registry import TokenRegistry

PLAYBOOK = "playbooks/agent_images.yml"
CHAINED = "tests/integration/playbooks/registry_and_agent_images.yml"
PUBLISH = "Publish the agent image references for the chart"
MAKE = "Build with the vendor Makefile"
PUSH = "Push the built images to the registry"
WAIT_PUSHES = "Wait for the image pushes, a progress line every few seconds"


def check_mode_report(run):
    """In check mode the build task's namesake (a report) runs; the real build task is skipped."""
    return [task["hosts"] for play in run.document["plays"] for task in play["tasks"]
            if task["task"]["name"].endswith(MAKE) and "results" in next(iter(task["hosts"].values()))
            and not next(iter(task["hosts"].values())).get("skipped")]


MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
IMAGES = {"management_agent": "datarobot/mlops-management-agent", "tracking_agent": "datarobot/mlops-tracking-agent"}


class Scenario:
    """One test's version tag, repository prefix, tarball and cache; cleans the registry and podman after."""

    def __init__(self, rig: dict[str, str], tmp_path: Path, build_delay: int = 0) -> None:
        self.rig, self.tmp_path = rig, tmp_path
        token = uuid.uuid4().hex[:8]
        self.version = f"9.2.0-t{token}"
        self.prefix = f"t{token}/"
        self.cache = tmp_path / "cache"
        self.tarball = build_agent_tarball(tmp_path / "in", self.version, build_delay)
        self.auth = (rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"])

    def repo(self, key: str) -> str:
        return self.prefix + IMAGES[key]

    def registry_facts(self, **extra) -> dict:
        return {"host": self.rig["RIG_REGISTRY"], "username": self.auth[0], "password": self.auth[1],
                "ca_path": self.rig["RIG_REGISTRY_CA"], "validate_certs": True, "insecure": False,
                "repositories": {key: self.repo(key) for key in IMAGES}, **extra}

    def vars(self, **extra) -> dict:
        return {"mlops_agent_tarball": str(self.tarball), "mlops_agent_tarball_cache_dir": str(self.cache),
                "_mlops": {"registry": self.registry_facts()}, **extra}

    def image_archives(self) -> dict:
        """A compressed `docker save` archive of each agent image under this version, of content no other run has."""
        return {key: write_docker_archive(self.tmp_path / f"{key}.tar.gz", [f"{IMAGES[key]}:{self.version}"],
                                          [{f"opt/{key}/agent-info.txt": f"{key} {uuid.uuid4()}\n".encode()}],
                                          compress=True) for key in IMAGES}

    def token_registry_login(self) -> tuple[TokenRegistry, dict[str, str], dict]:
        """The rig's token-auth registry (reset), this test's repositories on it in Docker Hub's shape
        (<organisation>/<name>), and registry facts that log in to it."""
        registry = TokenRegistry(self.rig).reset()
        organisation = self.prefix.rstrip("/")
        paths = {key: f"{organisation}/{name.rsplit('/', maxsplit=1)[-1]}" for key, name in IMAGES.items()}
        return registry, paths, {"host": registry.address, "username": registry.username,
                                 "password": registry.password, "ca_path": registry.ca_path, "validate_certs": True,
                                 "insecure": False, "repositories": paths}

    def manifest(self, key: str, tag: str | None = None) -> requests.Response:
        return requests.get(f"https://{self.rig['RIG_REGISTRY']}/v2/{self.repo(key)}/manifests/{tag or self.version}",
                            headers={"Accept": MANIFEST_TYPES}, auth=self.auth, verify=self.rig["RIG_REGISTRY_CA"],
                            timeout=30)

    def assert_holds(self, archives: dict, published: dict) -> None:
        """Each archive's image is in the registry under this version, and the role published its digest."""
        for key, facts in archives.items():
            response = self.manifest(key)
            assert response.status_code == 200 and response.json()["config"]["digest"] == facts.config_digest
            assert published[key]["digest"] == response.headers["Docker-Content-Digest"]

    def image_config(self, key: str) -> dict:
        digest = self.manifest(key).json()["config"]["digest"]
        return requests.get(f"https://{self.rig['RIG_REGISTRY']}/v2/{self.repo(key)}/blobs/{digest}", auth=self.auth,
                            verify=self.rig["RIG_REGISTRY_CA"], timeout=30).json()

    def local_images(self) -> list[str]:
        """Images podman built for this version (the fixture Dockerfile labels them with it)."""
        return subprocess.run(["docker", "images", "-aq", "--filter", f"label=org.opencontainers.image.version="
                               f"{self.version}"], capture_output=True, text=True, check=False, timeout=60,
                              env=os.environ).stdout.split()

    def clean(self) -> None:
        for key in IMAGES:
            head = self.manifest(key)
            if head.status_code == 200:  # a unique version: deleting its digest removes no one else's tag
                requests.delete(f"https://{self.rig['RIG_REGISTRY']}/v2/{self.repo(key)}/manifests/"
                                f"{head.headers['Docker-Content-Digest']}", auth=self.auth,
                                verify=self.rig["RIG_REGISTRY_CA"], timeout=30)
        for image_id in self.local_images():  # newest first; removing one also removes its untagged parents
            subprocess.run(["docker", "rmi", "--force", image_id], capture_output=True, check=False, timeout=120,
                           env=os.environ)


@pytest.fixture
def scenario(rig, tmp_path):
    made = Scenario(rig, tmp_path)
    yield made
    made.clean()


@pytest.fixture
def mlops_namespace(new_namespace):
    return new_namespace("t-agent-images")


def scratch_docker_configs(tmpdir: Path) -> set[str]:
    """The role's empty docker configs (the builds') in `tmpdir`, a run's own TMPDIR: another test's run cannot add
    one."""
    return {p.name for p in tmpdir.glob("agent-images-docker-*")}


def test_build_pushes_both_images_once_after_the_registry_stage(rig, scenario, mlops_namespace, tmp_path):
    """registry.yml then agent_images.yml, as site.yml chains them; the second run builds nothing."""
    extra = {"mlops_namespace": mlops_namespace, "mlops_registry_host": rig["RIG_REGISTRY"],
             "mlops_registry_username": rig["RIG_REGISTRY_USER"], "mlops_registry_password": rig["RIG_REGISTRY_PASSWORD"],
             "mlops_registry_ca_path": rig["RIG_REGISTRY_CA"], "mlops_registry_path_prefix": scenario.prefix,
             "mlops_agent_tarball": str(scenario.tarball), "mlops_agent_tarball_cache_dir": str(scenario.cache)}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    started = time.monotonic()
    first = run_playbook(CHAINED, extra_vars=extra, verbosity=3, env=ansible_env(TMPDIR=str(scratch)))
    assert first.returncode == 0, first.failure() or first.stderr[-3000:]
    assert rig["RIG_REGISTRY_PASSWORD"] not in first.stdout + first.stderr
    assert f"{scratch}/agent-images-docker-" in first.stdout  # the builds' empty docker config was made there ...
    assert scratch_docker_configs(scratch) == set()  # ... and is gone
    built = [(build["key"], build["changed"]) for build in first.task(MAKE)["builds"]]
    assert built == [("management_agent", True), ("tracking_agent", True)]
    started_pushes = first.task(PUSH)["results"]  # in the background: started, reported by the watcher
    assert [(result["item"]["key"], result["started"], result["changed"]) for result in started_pushes] == [
        ("management_agent", True, False), ("tracking_agent", True, False)]
    pushed = [(result["item"]["item"]["key"], result["changed"], result["tagged"])
              for result in first.task(WAIT_PUSHES)["results"]]
    assert pushed == [("management_agent", True, False), ("tracking_agent", True, False)]  # the Makefile named them
    assert not list(scratch.glob("pps-push-*"))  # the pushes' job directories are gone

    host = rig["RIG_REGISTRY"]
    published = first.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]
    assert set(published) == {"management_agent", "tracking_agent"}
    for key, entry in published.items():
        repository = f"{host}/{scenario.prefix}{IMAGES[key]}"
        response = scenario.manifest(key)
        assert response.status_code == 200, response.text
        assert entry == {"repository": repository, "tag": scenario.version, "image": f"{repository}:{scenario.version}",
                         "digest": response.headers["Docker-Content-Digest"]}
        # The version came from the tarball's chart (appVersion) and reached the image through the Makefile.
        assert scenario.image_config(key)["config"]["Labels"]["org.opencontainers.image.version"] == scenario.version
    # The closing summary (site.yml's) has a line per built image: the build's time and steps, the push's time.
    summary = first.task("What this run left on the cluster")["msg"]
    for label, key in (("agent image build", "management_agent"), ("tracking agent image build", "tracking_agent")):
        line = next(line for line in summary if line.startswith(label + ":"))
        assert re.fullmatch(rf"{label}: {re.escape(published[key]['image'])}: built in \d+s "
                            r"\(5 build steps\), pushed in \d+s", line), summary
    print(f"first run (registry + build + push of two images): {time.monotonic() - started:.1f}s")

    started = time.monotonic()
    again = run_playbook(CHAINED, extra_vars=extra)
    assert again.returncode == 0, again.failure()
    assert again.changed == 0
    assert again.task(MAKE).get("skipped")
    assert again.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"] == published
    assert "agent image build: -" in again.task("What this run left on the cluster")["msg"]
    print(f"second run (nothing to do): {time.monotonic() - started:.1f}s")


def test_present_verifies_and_names_what_is_missing(rig, scenario):
    built = run_playbook(PLAYBOOK, extra_vars=scenario.vars())
    assert built.returncode == 0, built.failure()
    present = run_playbook(PLAYBOOK, extra_vars={**scenario.vars(), "mlops_agent_images_method": "present"})
    assert present.returncode == 0 and present.changed == 0, present.failure()
    assert present.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"] == \
        built.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]
    # present needs no tarball: the version is given.
    missing = f"9.2.0-missing-{uuid.uuid4().hex[:6]}"
    absent = run_playbook(PLAYBOOK, extra_vars={"_mlops": {"registry": scenario.registry_facts()},
                                                "mlops_agent_images_method": "present", "mlops_agent_images_version": missing})
    assert absent.returncode != 0
    message = absent.failure()
    host = rig["RIG_REGISTRY"]
    assert f"Not in the registry: {host}/{scenario.repo('management_agent')}:{missing}, " \
           f"{host}/{scenario.repo('tracking_agent')}:{missing}." in message
    assert "mlops_agent_images_method build" in message and "mlops_tracking_agent_enabled: false" in message


def test_check_mode_builds_and_pushes_nothing(rig, scenario, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    check = run_playbook(PLAYBOOK, extra_vars=scenario.vars(mlops_tracking_agent_enabled=False), check=True,
                         env=ansible_env(TMPDIR=str(scratch)))
    assert check.returncode == 0, check.failure()
    reports = check_mode_report(check)
    assert len(reports) == 1
    would = next(iter(reports[0].values()))["results"]
    assert [(r["item"]["key"], r["changed"]) for r in would] == [("management_agent", True)]
    assert scenario.version in would[0]["msg"]
    assert check.task(MAKE).get("skipped")
    assert scenario.manifest("management_agent").status_code == 404
    assert scenario.manifest("tracking_agent").status_code == 404
    assert scenario.local_images() == []
    assert scratch_docker_configs(scratch) == set()
    published = check.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]
    assert list(published) == ["management_agent"] and published["management_agent"]["digest"] == ""
    # The tarball was unpacked (the chart is needed in check mode too), into the cache only.
    assert len(list(scenario.cache.iterdir())) == 1


def test_tracking_agent_disabled_builds_only_the_management_agent(rig, scenario):
    run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(mlops_tracking_agent_enabled=False))
    assert run.returncode == 0, run.failure()
    assert list(run.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]) == ["management_agent"]
    assert scenario.manifest("management_agent").status_code == 200
    assert scenario.manifest("tracking_agent").status_code == 404


def test_archive_pushes_docker_save_archives_without_a_daemon(rig, scenario, tmp_path):
    archives = scenario.image_archives()
    extra = {"_mlops": {"registry": scenario.registry_facts()}, "mlops_agent_images_method": "archive",
             "mlops_agent_images_version": scenario.version,
             "mlops_agent_images_archives": {key: str(facts.path) for key, facts in archives.items()}}
    check = run_playbook(PLAYBOOK, extra_vars=extra, check=True)
    assert check.returncode == 0 and check.changed > 0, check.failure()
    assert scenario.manifest("management_agent").status_code == 404
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    pushed = run_playbook(PLAYBOOK, extra_vars={**extra, "mlops_agent_images_docker_host": "unix:///nonexistent.sock"},
                          env=ansible_env(TMPDIR=str(scratch)))
    assert pushed.returncode == 0, pushed.failure()
    # In the background by default, as the PPS image: started, each in a job directory the module made, then collected
    # with a summary line each, the watcher removing the directory (the removal task then has nothing to do).
    started = pushed.task("Push the image archives")["results"]
    assert all(result["started"] and Path(result["job_dir"]).parent == scratch for result in started), started
    waited = pushed.task(WAIT_PUSHES)["results"]
    assert [": pushed, " in result["summary"] for result in waited] == [True, True], waited
    assert [result["job_dir_removed"] for result in waited] == [True, True], waited
    assert pushed.task("Remove the pushes' job directories").get("results", []) == []
    assert not list(scratch.iterdir()), "a job directory was left behind"
    published = pushed.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]
    scenario.assert_holds(archives, published)
    again = run_playbook(PLAYBOOK, extra_vars=extra)
    assert again.returncode == 0 and again.changed == 0
    assert rig["RIG_REGISTRY_PASSWORD"] not in pushed.stdout + pushed.stderr + again.stdout


def test_a_push_that_cannot_start_fails_the_stage_after_the_others_are_seen_through(rig, scenario, tmp_path):
    """The login may only pull from the tracking agent's repository, so its push is refused as it starts; the
    management agent's push, started in the background just before, is still watched to its end (its image lands
    and its summary is printed) before the stage fails naming the refused repository, and no job directory stays."""
    registry, paths, facts = scenario.token_registry_login()
    archives = scenario.image_archives()
    extra = {"_mlops": {"registry": facts}, "mlops_agent_images_method": "archive",
             "mlops_agent_images_version": scenario.version,
             "mlops_agent_images_archives": {key: str(made.path) for key, made in archives.items()}}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    try:
        registry.read_only(paths["tracking_agent"])
        run = run_playbook(PLAYBOOK, extra_vars=extra, env=ansible_env(TMPDIR=str(scratch)))
    finally:
        registry.reset()
    assert run.returncode != 0
    started = run.task("Push the image archives")["results"]
    assert [bool(result.get("started")) for result in started] == [True, False], started
    assert f"refuses it a push to {paths['tracking_agent']}" in started[1]["msg"], started[1]["msg"]
    waited = run.task(WAIT_PUSHES)["results"]
    assert ": pushed, " in waited[0]["summary"] and waited[0]["job_dir_removed"], waited
    assert waited[1].get("skipped"), waited
    answer = registry.get(f"{paths['management_agent']}/manifests/{scenario.version}",
                          f"repository:{paths['management_agent']}:pull", headers={"Accept": MANIFEST_TYPES})
    assert answer.status_code == 200, answer.text
    assert not list(scratch.iterdir()), "a job directory was left behind"
    assert paths["tracking_agent"] in run.failure(), run.failure()
    assert registry.password not in run.stdout + run.stderr


def evil_tarball(path: Path) -> Path:
    """An agent tarball that also carries `../evil`: written next to the cache entry if extracted naively."""
    top = "datarobot-mlops-agent-9.2.0"
    members = [(f"{top}/tools/charts/datarobot-management-agent/Chart.yaml", b"appVersion: 9.2.0\n"),
               ("../evil", b"owned\n"), (f"{top}/tools/bosun_docker/Makefile", b"push:\n\ttouch /tmp/owned\n")]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unsafe_tarball_is_refused_and_nothing_is_written(rig, scenario, tmp_path):
    tarball = evil_tarball(tmp_path / "datarobot-mlops-agent-9.2.0.tar.gz")
    run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(mlops_agent_tarball=str(tarball)))
    assert run.returncode != 0
    assert "Refusing agent tarball" in run.failure() and "'../evil'" in run.failure()
    assert not scenario.cache.exists() or list(scenario.cache.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (scenario.cache / "evil").exists()


def test_bad_inputs_fail_before_anything_is_touched(rig, scenario, tmp_path):
    def failure(**extra) -> str:
        run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(**extra))
        assert run.returncode != 0
        assert not scenario.cache.exists(), "the tarball was unpacked before the checks"
        return run.failure()

    assert "Refusing mlops_agent_images_version 'latest'" in failure(mlops_agent_images_version="latest")
    assert "mlops_agent_images_method" in failure(mlops_agent_images_method="docker")  # argument spec: not one of the choices
    # Paths that do not end with the image's name (those that do, OpenShift's <project>/<name> too, are built and
    # then tagged).
    renamed = {"host": rig["RIG_REGISTRY"], "repositories": {"management_agent": "datarobot-mlops/management",
                                                             "tracking_agent": "datarobot-mlops/tracking"}}
    message = failure(_mlops={"registry": renamed})
    assert "end with those names" in message and "mlops_agent_images_method: archive" in message
    assert "needs mlops_agent_images_archives.management_agent" in failure(mlops_agent_images_method="archive")
    assert "needs registry facts with a host" in failure(_mlops={"registry": {}})

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(scenario.tarball.read_bytes()[:300])
    run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(mlops_agent_tarball=str(truncated)))
    assert "truncated or corrupt" in run.failure()
    run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(mlops_agent_tarball=str(tmp_path / "missing.tar.gz")))
    assert "does not exist" in run.failure()
    # the module names its option and the role's variable that sets it
    assert "give its path as src (the agent_tarball role: mlops_agent_tarball)" in run.failure()
    run = run_playbook(PLAYBOOK, extra_vars={**scenario.vars(mlops_agent_tarball=""),
                                             "mlops_agent_tarball_dir": str(tmp_path / "no-such-dir")})
    assert f"path {tmp_path / 'no-such-dir'} is not a directory" in run.failure()
    assert "(the agent_tarball role: mlops_agent_tarball_dir, or mlops_agent_tarball)" in run.failure()


def test_build_without_a_docker_api_says_what_to_do(rig, scenario):
    run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(mlops_agent_images_docker_host="unix:///nonexistent.sock"))
    assert run.returncode != 0
    message = run.failure()
    assert "need the docker CLI and a Docker API" in message and "unix:///nonexistent.sock" in message
    assert "mlops_agent_images_method: archive" in message and "present" in message
    assert scenario.manifest("management_agent").status_code == 404


def test_rejected_credentials_are_named_without_the_password(rig, scenario):
    wrong = f"wrong-{uuid.uuid4().hex}"
    run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(_mlops={"registry": scenario.registry_facts(
        password=wrong)}), verbosity=3)
    assert run.returncode != 0
    message = run.task("Which images the registry has already")["results"][0]["msg"]
    assert f"Registry {rig['RIG_REGISTRY']} rejected the credentials for user 'rig'" in message
    assert wrong not in run.stdout + run.stderr


def test_build_pushes_organisation_paths_to_the_token_auth_registry(rig, scenario):
    """Docker Hub's shape, <organisation>/mlops-management-agent, which the vendor Makefile cannot name, pushed
    through podman to the rig's token-auth registry (Bearer tokens from its token service)."""
    registry, paths, facts = scenario.token_registry_login()
    run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(_mlops={"registry": facts}))
    assert run.returncode == 0, run.failure() or run.stderr[-3000:]
    assert registry.password not in run.stdout + run.stderr
    published = run.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]
    for key, path in paths.items():
        answer = registry.get(f"{path}/manifests/{scenario.version}", f"repository:{path}:pull",
                              headers={"Accept": MANIFEST_TYPES})
        assert answer.status_code == 200, answer.text
        assert published[key]["image"] == f"{registry.address}/{path}:{scenario.version}"
        assert published[key]["digest"] == answer.headers["Docker-Content-Digest"]
    # Built under the Makefile's datarobot/... path, then tagged with the organisation's by the push.
    assert [result["tagged"] for result in run.task(WAIT_PUSHES)["results"]] == [True, True]
    scopes = {scope for request in registry.requests for scope in request["scopes"]}
    assert {f"repository:{path}:pull,push" for path in paths.values()} <= scopes
    again = run_playbook(PLAYBOOK, extra_vars=scenario.vars(_mlops={"registry": facts}))
    assert again.returncode == 0 and again.changed == 0, again.failure()


BUILD_LINE = re.compile(r"^(?P<image>\S+): (starting|building, step \d+ of \d+|built( \(\d+ steps\))?|pushing"
                        r"(, \d+ of \d+ layers done \(\d+ mounted, \d+ already there\))?|pushed), \d+(s|m\d\ds|h\d\dm)$")
# build_progress's line at a build's end (the push follows, daemon_image_push's).
BUILD_SUMMARY = re.compile(r"^(?P<image>\S+): built( and pushed)? in \d+(s|m\d\ds|h\d\dm)( \(.*\))?$")


class LogSnoop(threading.Thread):
    """Reads every build log under `scratch` as often as it changes while a run goes: text, file and folder modes."""

    def __init__(self, scratch: Path) -> None:
        super().__init__(daemon=True)
        self.scratch, self.halt = scratch, threading.Event()
        self.seen: list[tuple[str, int, int]] = []

    def run(self) -> None:
        while not self.halt.is_set():
            for found in self.scratch.glob("agent-images-build-*/*.log"):
                try:
                    mode, folder = found.stat().st_mode, found.parent.stat().st_mode
                    self.seen.append((found.read_text(), stat.S_IMODE(mode), stat.S_IMODE(folder)))
                except OSError:
                    pass  # removed between glob and read: the run's end
            self.halt.wait(0.1)


def test_build_prints_progress_lines_while_it_runs_and_leaves_no_log(rig, tmp_path, ledger):
    """Both images build at once (a test Makefile that waits 8 s after each build): lines every 2 s per image, before
    each image's summary line; the logs are private, hold no secret, and are gone afterwards."""
    scenario = Scenario(rig, tmp_path, build_delay=8)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    snoop = LogSnoop(scratch)
    snoop.start()
    try:
        run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(mlops_agent_images_poll=2),
                           env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(scratch)))
    finally:
        snoop.halt.set()
        snoop.join()
        scenario.clean()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    lines = [line.strip() for line in run.stdout.splitlines()]
    host = rig["RIG_REGISTRY"]
    for key in IMAGES:
        image = f"{host}/{scenario.repo(key)}:{scenario.version}"
        ends = [index for index, line in enumerate(lines) if (match := BUILD_SUMMARY.match(line))
                and match["image"] == image]
        assert ends, f"no summary line for {image} in:\n{run.stdout[-3000:]}"
        during = [line for line in lines[:ends[0]] if (match := BUILD_LINE.match(line)) and match["image"] == image]
        assert len(during) >= 2, f"progress lines for {image} before its end: {during}\n{run.stdout[-3000:]}"
        assert any(": built (5 steps), " in line for line in during), during

    secrets = [rig["RIG_REGISTRY_PASSWORD"], rig["RIG_REGISTRY_USER"] + ":", "Authorization", "auths"]
    hits = [secret for secret in secrets for text, _mode, _folder in snoop.seen if secret in text]
    modes = {(oct(mode), oct(folder)) for _text, mode, folder in snoop.seen}
    left = list(scratch.glob("agent-images-build-*"))
    ledger.record("secret", "agent_images build logs (read while they change) and what is left of them afterwards",
                  bool(snoop.seen) and not hits and not left and modes == {("0o600", "0o700")},
                  f"{len(snoop.seen)} snapshots, modes {sorted(modes)}", count=len(hits))
    assert snoop.seen, "no build log was seen while the builds ran"
    assert any("STEP 5/5" in text for text, _mode, _folder in snoop.seen)
    assert not hits, hits
    assert modes == {("0o600", "0o700")}, modes
    assert not left, "the build log directory was left behind"
    assert rig["RIG_REGISTRY_PASSWORD"] not in run.stdout + run.stderr


def test_a_failed_build_names_its_image_and_last_lines_and_leaves_no_log(rig, scenario, tmp_path, ledger):
    """The management agent's Dockerfile copies a file that is not there: the task fails after both builds ended,
    naming that image and what podman said; the other image is still built; the logs are gone."""
    with tarfile.open(scenario.tarball) as tar:
        tar.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    tree = tmp_path / "unpacked" / f"datarobot-mlops-agent-{scenario.version}"
    dockerfile = tree / "tools" / "bosun_docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("COPY agent-info.txt", "COPY no-such-file.txt"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = run_playbook(PLAYBOOK, extra_vars={**scenario.vars(mlops_agent_tarball=""), "mlops_agent_tarball_dir": str(tree)},
                       env=ansible_env(TMPDIR=str(scratch)))
    message = run.failure()
    image = f"{rig['RIG_REGISTRY']}/{scenario.repo('management_agent')}:{scenario.version}"
    named = f"Building and pushing {image} failed (exit status 2)" in message
    said = "COPY no-such-file.txt" in message and "no such file or directory" in message
    left = list(scratch.glob("agent-images-build-*"))
    ledger.record("bad_input", "agent_images build: a vendor Dockerfile that fails (a COPY source missing)",
                  run.returncode != 0 and named and said and not left, message[:300])
    assert run.returncode != 0
    assert named and said, message
    assert "DOCKER_HOST" in message
    assert scenario.manifest("management_agent").status_code == 404
    assert scenario.manifest("tracking_agent").status_code == 200  # built beside it, to the end
    assert not left, "the build log directory was left behind"


class DiskSnoop(threading.Thread):
    """Reads every file under `roots` over and over while a run goes, recording each one that holds one of `needles`
    (name -> bytes): what a killed run would leave behind, and what anyone who can read it sees meanwhile."""

    def __init__(self, roots: list[Path], needles: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.roots, self.needles, self.halt = roots, needles, threading.Event()
        self.hits: dict[str, set[str]] = {}
        self.files: set[str] = set()

    def scan(self) -> None:
        for root in self.roots:
            for folder, _dirs, names in os.walk(root):
                for name in names:
                    path = os.path.join(folder, name)
                    try:
                        if os.path.islink(path) or os.path.getsize(path) > 64 * 1024 * 1024:
                            continue
                        with open(path, "rb") as stream:
                            data = stream.read()
                    except OSError:
                        continue  # removed between the listing and the read
                    self.files.add(path)
                    for label, needle in self.needles.items():
                        if needle in data:
                            self.hits.setdefault(path, set()).add(label)

    def run(self) -> None:
        while not self.halt.is_set():
            self.scan()
            self.halt.wait(0.05)
        self.scan()  # and what is left at the end


def login_needles(username: str, password: str) -> dict[str, bytes]:
    """The password as it may be written: plain, docker config's `auth` (base64 of user:password), base64 alone,
    in either base64 alphabet."""
    pair = f"{username}:{password}".encode()
    needles = {"password": password.encode()}
    for label, value in (("base64(user:password)", pair), ("base64(password)", password.encode())):
        needles[label] = base64.b64encode(value).rstrip(b"=")
        needles[label + ", URL-safe"] = base64.urlsafe_b64encode(value).rstrip(b"=")
    return needles


def test_build_and_push_never_write_the_login_to_disk(rig, tmp_path, ledger):
    """While both images build (8 s each at least) and are pushed, and after, no file under the run's temporary
    directories (TMPDIR: the builds' docker config and logs; Ansible's remote and local temporary directories and its
    async job files; the run's HOME) or podman's API service's own temporary directory holds the registry password,
    in clear or base64 (docker login's config.json `auth`). The run's HOME is a fresh directory, so ~/.docker and
    ~/.ansible are this run's too."""
    scenario = Scenario(rig, tmp_path, build_delay=8)
    scratch = tmp_path / "tmp"
    home = tmp_path / "home"
    for folder in (scratch, home):
        folder.mkdir()
    podman_tmp = Path(rig["DOCKER_HOST"].removeprefix("unix://")).parent / "tmp"
    roots = [scratch, home] + ([podman_tmp] if podman_tmp.is_dir() else [])
    snoop = DiskSnoop(roots, login_needles(*scenario.auth))
    snoop.start()
    try:
        run = run_playbook(PLAYBOOK, extra_vars=scenario.vars(),
                           env=ansible_env(TMPDIR=str(scratch), HOME=str(home),
                                           ANSIBLE_REMOTE_TMP=str(scratch / "ansible-remote"),
                                           ANSIBLE_LOCAL_TEMP=str(scratch / "ansible-local"),
                                           ANSIBLE_ASYNC_DIR=str(scratch / "ansible-async"),
                                           ANSIBLE_KEEP_REMOTE_FILES="0"))
    finally:
        snoop.halt.set()
        snoop.join()
        scenario.clean()
    assert run.returncode == 0, run.failure() or run.stdout[-3000:]
    assert [result["changed"] for result in run.task(WAIT_PUSHES)["results"]] == [True, True]
    async_files = [path for path in snoop.files if "/ansible-async/" in path]
    held = {path: sorted(labels) for path, labels in snoop.hits.items()}
    ledger.record("secret", "agent_images build: no file of the run (TMPDIR, HOME, Ansible's temporary and async "
                  "files, podman's temporary files) holds the registry password or its base64, while running or after",
                  bool(async_files) and not held, f"{len(snoop.files)} files read; hits: {held or 'none'}",
                  count=len(held))
    assert async_files, "the builds' async job files were not seen: the scan did not cover them"
    assert any(Path(path).name.endswith(".log") for path in snoop.files), "the build logs were not seen"
    assert not held, held


def test_daemon_image_push_tags_pushes_once_and_checks_against_a_plain_http_registry(rig, tmp_path):
    """The module alone, against the rig's plain-HTTP registry (which podman's API lists as insecure): an image built
    under another name is tagged and pushed; check mode and diff say so first and change nothing; a second run
    changes nothing; an image the Docker API does not hold is named."""
    host, token = rig["RIG_INSECURE_REGISTRY"], uuid.uuid4().hex[:8]
    source, name = f"localhost/t{token}/built:1", f"{host}/t{token}/pushed"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM scratch\nLABEL test.token={token}\nCOPY data /data\n")
    (context / "data").write_bytes(os.urandom(64 * 1024))
    built = subprocess.run(["docker", "build", "--quiet", "--tag", source, str(context)], capture_output=True,
                           text=True, check=False, timeout=300, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert built.returncode == 0, built.stderr
    args = {"source": source, "name": name, "tag": "1", "insecure": True, "docker_host": rig["DOCKER_HOST"]}
    try:
        check = run_module("datarobot_mlops.management_agent.daemon_image_push", args, check=True, diff=True)
        assert not check.failed, check.result.get("msg")
        assert check.result["changed"] and check.result["tagged"] and check.result["digest"] == ""
        assert check.result["diff"]["before"]["digest"] == "" and check.result["msg"].endswith("would be pushed")
        assert requests.get(f"http://{host}/v2/t{token}/pushed/manifests/1", timeout=30).status_code == 404
        first = run_module("datarobot_mlops.management_agent.daemon_image_push", args)
        assert not first.failed, first.result.get("msg")
        assert first.result["changed"] and first.result["tagged"] and first.result["before"] == ""
        answer = requests.get(f"http://{host}/v2/t{token}/pushed/manifests/1", timeout=30, headers={
            "Accept": MANIFEST_TYPES})
        assert answer.status_code == 200 and answer.headers["Docker-Content-Digest"] == first.result["digest"]
        assert answer.json()["config"]["digest"] == first.result["image_id"]
        again = run_module("datarobot_mlops.management_agent.daemon_image_push", args)
        assert not again.failed and again.result["changed"] is False and not again.result["tagged"]
        assert again.result["summary"] == f"{name}:1: already in the registry"
        missing = run_module("datarobot_mlops.management_agent.daemon_image_push",
                             {**args, "source": f"localhost/t{token}/never-built:1", "tag": "2"})
        assert missing.failed and f"has no image localhost/t{token}/never-built:1 to push" in missing.result["msg"]
    finally:
        for image in (source, f"{name}:1"):
            subprocess.run(["docker", "rmi", "--force", image], capture_output=True, check=False, timeout=120,
                           env=os.environ)


PUSHING_LINE = re.compile(r"^(?P<image>\S+): pushing through the Docker API for (?P<seconds>\d+)s \([\d.]+ [kMG]?B\)$")
PUSHED_LINE = re.compile(r"^(?P<image>\S+): pushed in \d+s")


class RegistryPause(threading.Thread):
    """Once a background push is under way (its job directory's progress says "pushing"), the registry stops
    answering for `seconds` (SIGSTOP, then SIGCONT): the push is then surely still running at the watcher's next
    looks, however fast this machine pushes."""

    def __init__(self, rig: dict[str, str], scratch: Path, seconds: float) -> None:
        super().__init__(daemon=True)
        pid_text = (Path(rig["RIG_DIR"]) / "pids" / "registry-http.pid").read_text().split()[0]
        self.pid, self.scratch, self.seconds, self.halt = int(pid_text), scratch, seconds, threading.Event()
        self.paused = False

    def run(self) -> None:
        while not self.halt.is_set():
            if any(self._phase(found) == "pushing" for found in self.scratch.glob("pps-push-*/progress.json")):
                os.kill(self.pid, signal.SIGSTOP)
                self.paused = True
                try:
                    self.halt.wait(self.seconds)
                finally:
                    os.kill(self.pid, signal.SIGCONT)
                return
            self.halt.wait(0.05)

    @staticmethod
    def _phase(progress: Path) -> str:
        try:
            return str(json.loads(progress.read_text()).get("phase"))
        except (OSError, ValueError):  # not there yet, gone already, or replaced as it was read
            return ""


def test_daemon_image_push_in_the_background_prints_progress_lines_until_it_ends(rig, tmp_path):
    """An image pushed through podman's API in the background, the registry pausing 3 s once the push is under way:
    the watcher prints a line every second while the push runs (podman tells no bytes: how long it has been pushing),
    then the push's summary; the job directory is gone afterwards, and the registry holds the tag."""
    host, token = rig["RIG_INSECURE_REGISTRY"], uuid.uuid4().hex[:8]
    source, name = f"localhost/t{token}/large:1", f"{host}/t{token}/large"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM scratch\nLABEL test.token={token}\nCOPY data /data\n")
    (context / "data").write_bytes(os.urandom(20 * 10**6))
    built = subprocess.run(["docker", "build", "--quiet", "--tag", source, str(context)], capture_output=True,
                           text=True, check=False, timeout=600, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert built.returncode == 0, built.stderr
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    playbook = tmp_path / "push.yml"
    args = {"source": source, "name": name, "tag": "1", "insecure": True, "docker_host": rig["DOCKER_HOST"],
            "background": True}
    playbook.write_text(json.dumps([{"hosts": "clusters", "gather_facts": False, "tasks": [
        {"name": "push", "datarobot_mlops.management_agent.daemon_image_push": args, "register": "started"},
        {"name": "wait", "datarobot_mlops.management_agent.push_progress": {
            "job_dir": "{{ started.job_dir }}", "interval": 1, "remove": True}, "register": "pushed"},
        {"name": "result", "ansible.builtin.debug": {"msg": "{{ pushed.digest }} {{ pushed.changed }}"}}]}]))
    pause = RegistryPause(rig, scratch, 3)
    pause.start()
    try:
        run = run_playbook(str(playbook), env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(scratch)))
        pause.halt.set()
        pause.join()
        assert pause.paused, "the push was never seen under way"
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        lines = [line.strip() for line in run.stdout.splitlines()]
        pushing = [(index, match) for index, line in enumerate(lines) if (match := PUSHING_LINE.match(line))]
        ends = [index for index, line in enumerate(lines) if (match := PUSHED_LINE.match(line))
                and match["image"] == f"{name}:1"]
        assert len(pushing) >= 2 and ends, run.stdout[-3000:]
        assert {match["image"] for _index, match in pushing} == {f"{name}:1"}
        assert all(index < ends[0] for index, _match in pushing)
        seconds = [int(match["seconds"]) for _index, match in pushing]
        assert seconds == sorted(seconds) and seconds[-1] > seconds[0], seconds
        answer = requests.get(f"http://{host}/v2/t{token}/large/manifests/1", timeout=30,
                              headers={"Accept": MANIFEST_TYPES})
        assert answer.status_code == 200
        assert f"{answer.headers['Docker-Content-Digest']} True" in run.stdout
        assert not list(scratch.glob("pps-push-*")), "the push's job directory was left behind"
    finally:
        pause.halt.set()
        pause.join()
        for image in (source, f"{name}:1"):
            subprocess.run(["docker", "rmi", "--force", image], capture_output=True, check=False, timeout=120,
                           env=os.environ)
