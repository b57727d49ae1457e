"""pps_image's retries and resumed uploads, through a fault-injecting proxy in front of the HTTP registry.

The library is driven directly (not through Ansible) so that the proxy lives in the test process.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_push import (
    CHUNK,
    DirectPusher,
    PushCache,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    RegistryClient,
    RegistryError,
)
from fault_proxy import FaultProxy
from test_pps_image import archive, assert_same_image, pulled_back


@pytest.fixture
def proxy(rig):
    upstream = int(rig["RIG_INSECURE_REGISTRY"].rsplit(":", 1)[1])
    with FaultProxy(upstream) as running:
        yield running


def push(proxy, facts, repo, retries=5):
    repository = Repository.parse(f"127.0.0.1:{proxy.port}/{repo}")
    client = RegistryClient(repository.registry, insecure=True, retries=retries, backoff=0.01)
    return DirectPusher(client, repository, ["1.0"], cache=PushCache(None)).push(str(facts.path))


def is_patch(method, path):
    return method == "PATCH"


def tags(rig, repo):
    answer = requests.get(f"http://{rig['RIG_INSECURE_REGISTRY']}/v2/{repo}/tags/list", timeout=10)
    return answer.json().get("tags") if answer.status_code == 200 else None


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_bursts_of_errors_are_retried(rig, proxy, tmp_path, status):
    facts = archive(tmp_path, compress=True)
    repo = f"faults/burst-{uuid.uuid4().hex[:6]}"
    proxy.faults.fail(2, status, lambda method, path: method in ("PATCH", "PUT", "HEAD"))
    proxy.faults.fail(2, status, lambda method, path: method == "POST")
    result = push(proxy, facts, repo)
    assert result.changed and result.blobs_uploaded == 3
    assert sum(1 for seen in proxy.faults.seen if seen[2] == status) == 4
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


def test_persistent_errors_fail_clearly_after_the_limit_and_tag_nothing(rig, proxy, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = f"faults/down-{uuid.uuid4().hex[:6]}"
    proxy.faults.fail(1000, 503, lambda method, path: "/manifests/" in path and method == "PUT")
    with pytest.raises(RegistryError, match=r"answered 503 to PUT .*injected fault \(after 3 attempts\)"):
        push(proxy, facts, repo, retries=3)
    assert tags(rig, repo) is None


def test_a_dropped_connection_mid_upload_is_resumed(rig, proxy, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = f"faults/cut-{uuid.uuid4().hex[:6]}"
    proxy.faults.cut(64 * 1024, is_patch, count=2)
    result = push(proxy, facts, repo)
    assert result.blobs_uploaded == 3
    cuts = [seen for seen in proxy.faults.seen if seen[2] == -1]
    assert len(cuts) == 2
    assert any(seen[0] == "GET" and "/blobs/uploads/" in seen[1] for seen in proxy.faults.seen)
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


def test_a_failed_run_leaves_no_tag_and_the_next_run_completes(rig, proxy, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = f"faults/rerun-{uuid.uuid4().hex[:6]}"
    proxy.faults.cut(1024, is_patch, count=100)
    with pytest.raises(RegistryError):
        push(proxy, facts, repo, retries=2)
    assert tags(rig, repo) is None  # no tag ever points at missing blobs
    proxy.faults.cuts.clear()
    result = push(proxy, facts, repo)
    assert result.changed
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


def test_a_cut_in_a_later_chunk_resumes_from_the_registrys_offset(rig, proxy, tmp_path):
    import os

    facts = archive(tmp_path, layers=[{"big.bin": os.urandom(5 * CHUNK)}])  # random: does not compress
    repo = f"faults/later-{uuid.uuid4().hex[:6]}"
    patches = []

    def second_patch(method, path):
        if method != "PATCH":
            return False
        patches.append(path)
        return len(patches) == 2

    proxy.faults.cut(1024 * 1024, second_patch)
    result = push(proxy, facts, repo)
    assert result.blobs_uploaded == 2
    sent = [seen for seen in proxy.faults.seen if seen[0] == "PATCH"]
    chunks = -(-facts.path.stat().st_size // CHUNK)  # the layer is the archive's bulk
    # chunk 1, chunk 2 cut, chunk 2 again (not 1 again: resumed at the registry's offset), the rest, the config
    assert [seen[2] for seen in sent] == [202, -1] + [202] * chunks

    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)
