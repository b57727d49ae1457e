"""Sources AWX can reach: the PPS archive, the agent image archives and the agent tarball by URL, on the rig.

A local file server (tests/file_server.py: Range, ETag, cuts on demand) serves the files; the registry is the rig's
TLS registry. The registry is asked before anything is downloaded: when the tag is there, the server sees no
request and nothing is pushed, unless forced.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
import requests

from ansible_cli import run_playbook
from file_server import FileServer
from test_agent_images_role import PUBLISH, Scenario
from test_pps_image import archive
from test_pps_image_role import registry_facts
from token_registry import TokenRegistry

PPS = "playbooks/pps_image.yml"
AGENT_IMAGES = "playbooks/agent_images.yml"
PPS_PUBLISH = "Publish the image reference for the chart's imageBuilder.ppsImage"


@pytest.fixture
def scenario(rig, tmp_path):
    made = Scenario(rig, tmp_path)
    yield made
    made.clean()


def sha256(path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def tag_digest(rig, repo: str, tag: str) -> str:
    response = requests.head(f"https://{rig['RIG_REGISTRY']}/v2/{repo}/manifests/{tag}",
                             headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
                             auth=(rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]),
                             verify=rig["RIG_REGISTRY_CA"], timeout=30)
    return response.headers.get("Docker-Content-Digest", "") if response.status_code == 200 else ""


def test_pps_image_by_url_resumes_then_asks_the_registry_first(rig, tmp_path, ledger):
    first = archive(tmp_path, "first.tar.gz", compress=True)
    second = archive(tmp_path, "second.tar.gz", compress=True)  # another image, served later under the same URL
    repo = f"datarobot/url-{uuid.uuid4().hex[:6]}"
    cache = tmp_path / "cache"
    with FileServer({"/pps.tar.gz": first.path.read_bytes()}) as server:
        size = first.path.stat().st_size
        server.cut(size // 2)
        extra = {"mlops_pps_image_url": server.url("/pps.tar.gz"), "mlops_pps_image_checksum": sha256(first.path),
                 "mlops_pps_image_version": "9.4.0", "mlops_download_cache_dir": str(cache),
                 "_mlops": {"registry": registry_facts(rig, repo)}}
        check = run_playbook(PPS, extra_vars=extra, check=True)
        assert check.returncode == 0 and check.changed > 0, check.failure()
        assert server.gets() == [] and tag_digest(rig, repo, "9.4.0") == ""

        pushed = run_playbook(PPS, extra_vars=extra)
        assert pushed.returncode == 0, pushed.failure()
        assert len(server.gets()) == 2 and server.body_bytes < 2 * size, "the cut download was not resumed"
        assert (cache / "pps.tar.gz").read_bytes() == first.path.read_bytes()
        digest = tag_digest(rig, repo, "9.4.0")
        assert pushed.task(PPS_PUBLISH)["ansible_facts"]["__pps_image_published"]["pps_image_digest"] == digest

        # The URL now serves another image and the cache is gone: the registry has the tag, so nothing is fetched.
        (cache / "pps.tar.gz").unlink()
        server.files["/pps.tar.gz"] = second.path.read_bytes()
        requests_before = len(server.requests)
        moved = {**extra, "mlops_pps_image_checksum": sha256(second.path)}
        again = run_playbook(PPS, extra_vars=moved)
        ledger.record("idempotence", "pps_image role by URL: the registry has the tag, nothing downloaded or pushed",
                      held=again.changed == 0 and len(server.requests) == requests_before,
                      detail=f"requests to the file server: {len(server.requests) - requests_before}",
                      count=again.changed)
        assert again.returncode == 0 and again.changed == 0, again.failure()
        assert len(server.requests) == requests_before, "the file server was asked although the registry had the tag"
        assert again.task("Push the PPS image").get("skipped") and tag_digest(rig, repo, "9.4.0") == digest
        assert again.task(PPS_PUBLISH)["ansible_facts"]["__pps_image_published"]["pps_image_digest"] == digest

        forced = run_playbook(PPS, extra_vars={**moved, "mlops_pps_image_force": True})
        assert forced.returncode == 0 and forced.changed > 0, forced.failure()
        assert len(server.gets()) == 3 and tag_digest(rig, repo, "9.4.0") not in ("", digest)
        assert rig["RIG_REGISTRY_PASSWORD"] not in pushed.stdout + again.stdout + forced.stdout


def test_pps_image_url_with_a_wrong_checksum_fails_and_keeps_nothing(rig, tmp_path):
    facts = archive(tmp_path, "pps.tar.gz", compress=True)
    cache = tmp_path / "cache"
    with FileServer({"/pps.tar.gz": facts.path.read_bytes()}) as server:
        run = run_playbook(PPS, extra_vars={
            "mlops_pps_image_url": server.url("/pps.tar.gz?token=s3cr3t-t0ken"), "mlops_pps_image_version": "9.4.0",
            "mlops_pps_image_checksum": "sha256:" + "0" * 64, "mlops_download_cache_dir": str(cache),
            "_mlops": {"registry": registry_facts(rig, f"datarobot/bad-{uuid.uuid4().hex[:6]}")}})
    message = run.failure()
    assert run.returncode != 0 and "nothing was kept" in message and facts.path.name in message, message
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    assert "s3cr3t-t0ken" not in run.stdout + run.stderr


def test_pps_image_by_url_is_not_downloaded_for_a_login_that_may_only_pull(rig, tmp_path):
    """A read-only login (the token service grants it pull only on the repository): /v2/ and the tag's lookup
    answer, but the push would be refused, so the run (and --check) fails saying so before the archive is asked
    for."""
    registry = TokenRegistry(rig).reset()
    facts = archive(tmp_path, "pps.tar.gz", compress=True)
    repo = f"datarobot/read-only-{uuid.uuid4().hex[:6]}"
    cache = tmp_path / "cache"
    login = {"host": registry.address, "username": registry.username, "password": registry.password,
             "ca_path": registry.ca_path, "repositories": {"pps": repo}}
    try:
        registry.read_only(repo)
        with FileServer({"/pps.tar.gz": facts.path.read_bytes()}) as server:
            extra = {"mlops_pps_image_url": server.url("/pps.tar.gz"), "mlops_pps_image_checksum": sha256(facts.path),
                     "mlops_pps_image_version": "9.4.0", "mlops_download_cache_dir": str(cache),
                     "_mlops": {"registry": login}}
            runs = [run_playbook(PPS, extra_vars=extra, check=True), run_playbook(PPS, extra_vars=extra)]
            assert server.requests == [], "the archive was asked for although the push would be refused"
    finally:
        registry.reset()
    for run in runs:
        message = run.failure()
        assert run.returncode != 0 and f"refuses it a push to {repo}" in message and "push rights" in message, message
        assert registry.password not in run.stdout + run.stderr
    assert not cache.exists() or [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_agent_tarball_and_image_archives_by_url(rig, scenario, tmp_path):
    archives = scenario.image_archives()
    files = {f"/{key}.tar.gz": facts.path.read_bytes() for key, facts in archives.items()}
    files["/agent.tar.gz"] = scenario.tarball.read_bytes()
    with FileServer(files) as server:
        extra = {"_mlops": {"registry": scenario.registry_facts()}, "mlops_agent_images_method": "archive",
                 "mlops_agent_tarball": "", "mlops_agent_tarball_url": server.url("/agent.tar.gz"),
                 "mlops_agent_tarball_checksum": sha256(scenario.tarball),
                 "mlops_agent_tarball_cache_dir": str(scenario.cache), "mlops_download_cache_dir": str(tmp_path / "dl"),
                 "mlops_agent_images_archives": {key: {"url": server.url(f"/{key}.tar.gz"),
                                                       "checksum": sha256(facts.path)}
                                                 for key, facts in archives.items()}}
        pushed = run_playbook(AGENT_IMAGES, extra_vars=extra)
        assert pushed.returncode == 0, pushed.failure()
        published = pushed.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]
        scenario.assert_holds(archives, published)
        assert {published[key]["tag"] for key in archives} == {scenario.version}  # from the downloaded chart
        assert sorted(path for _method, path, _headers in server.requests) == \
            ["/agent.tar.gz", "/management_agent.tar.gz", "/tracking_agent.tar.gz"]

        # A new cache for the archives: the registry has both tags, so neither archive is asked for again.
        again = run_playbook(AGENT_IMAGES, extra_vars={**extra, "mlops_download_cache_dir": str(tmp_path / "dl2")})
        assert again.returncode == 0, again.failure()
        assert [path for _m, path, _h in server.requests].count("/management_agent.tar.gz") == 1
        assert again.task("Push the image archives")["results"][0].get("skipped")
        assert again.changed == 1, "only the agent tarball (a new download cache) was fetched again"
        republished = again.task(PUBLISH)["ansible_facts"]["__agent_images_published"]["agent_images"]
        assert republished == published


def test_agent_image_archives_by_url_are_not_downloaded_for_a_login_that_may_only_pull(rig, scenario, tmp_path):
    """The tracking agent's repository is read-only to the login: the stage fails saying so before either image
    archive is asked for (the agent tarball, which names the version, is fetched first)."""
    registry, paths, login = scenario.token_registry_login()
    archives = scenario.image_archives()
    files = {f"/{key}.tar.gz": facts.path.read_bytes() for key, facts in archives.items()}
    files["/agent.tar.gz"] = scenario.tarball.read_bytes()
    try:
        registry.read_only(paths["tracking_agent"])
        with FileServer(files) as server:
            run = run_playbook(AGENT_IMAGES, extra_vars={
                "_mlops": {"registry": login}, "mlops_agent_images_method": "archive", "mlops_agent_tarball": "",
                "mlops_agent_tarball_url": server.url("/agent.tar.gz"),
                "mlops_agent_tarball_checksum": sha256(scenario.tarball),
                "mlops_agent_tarball_cache_dir": str(scenario.cache), "mlops_download_cache_dir": str(tmp_path / "dl"),
                "mlops_agent_images_archives": {key: {"url": server.url(f"/{key}.tar.gz"),
                                                      "checksum": sha256(facts.path)}
                                                for key, facts in archives.items()}})
            asked = sorted({path for _method, path, _headers in server.requests})
    finally:
        registry.reset()
    message = run.failure()
    assert run.returncode != 0 and f"refuses it a push to {paths['tracking_agent']}" in message, message
    assert asked == ["/agent.tar.gz"], asked
    assert registry.password not in run.stdout + run.stderr
