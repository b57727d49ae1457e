"""pps_image's retries and resumed uploads, through a fault-injecting proxy in front of the HTTP registry.

The library is driven directly (not through Ansible) so that the proxy lives in the test process.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import uuid

import pytest
import requests

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    BlobChanged,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import BlobSpool
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


@pytest.fixture(autouse=True)
def counted(counted_fault):
    """Every test here injects a fault into a push: the reliability ledger counts it."""


@pytest.fixture
def proxy(rig):
    upstream = int(rig["RIG_INSECURE_REGISTRY"].rsplit(":", 1)[1])
    with FaultProxy(upstream) as running:
        yield running


def push(proxy, facts, repo, retries=5, compression=None, spool=None):
    repository = Repository.parse(f"127.0.0.1:{proxy.port}/{repo}")
    client = RegistryClient(repository.registry, insecure=True, retries=retries, backoff=0.01)
    return DirectPusher(client, repository, ["1.0"], cache=PushCache(None), compression=compression or Compression(),
                        spool=spool).push(str(facts.path))


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


def nth_patch(n: int, patches: list[str]):
    """A fault matcher for the n-th PATCH; the paths of the PATCHes seen go into `patches`."""
    def matches(method: str, path: str) -> bool:
        if method != "PATCH":
            return False
        patches.append(path)
        return len(patches) == n

    return matches


def test_a_cut_in_a_later_chunk_resumes_from_the_registrys_offset(rig, proxy, tmp_path):
    import os

    facts = archive(tmp_path, layers=[{"big.bin": os.urandom(5 * CHUNK)}])  # random: does not compress
    repo = f"faults/later-{uuid.uuid4().hex[:6]}"
    patches: list[str] = []
    second_patch = nth_patch(2, patches)
    proxy.faults.cut(1024 * 1024, second_patch)
    result = push(proxy, facts, repo)
    assert result.blobs_uploaded == 2
    sent = [seen for seen in proxy.faults.seen if seen[0] == "PATCH"]
    chunks = -(-facts.path.stat().st_size // CHUNK)  # the layer is the archive's bulk
    # chunk 1, chunk 2 cut, chunk 2 again (not 1 again: resumed at the registry's offset), the rest, the config
    assert [seen[2] for seen in sent] == [202, -1] + [202] * chunks

    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


# --- the registry keeps what it received: resume within the same run -------------------------------------------

def _big_layer_archive(tmp_path, chunks: int, **kwargs):
    import os

    return archive(tmp_path, layers=[{"big.bin": os.urandom(chunks * CHUNK)}], **kwargs)  # random: no compression


def _patches(proxy):
    return [seen for seen in proxy.faults.seen if seen[0] == "PATCH"]


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_a_cut_after_part_of_a_chunk_reached_the_registry_resumes_in_the_same_run(rig, proxy, tmp_path, compress):
    """Docker Distribution writes what it received of a cut PATCH; the upload URL's state then no longer matches
    and the registry drops that session at the next call: the blob restarts in a new session, in this run."""
    facts = _big_layer_archive(tmp_path, 4, compress=compress)
    repo = f"faults/partial-{uuid.uuid4().hex[:6]}"
    blob = facts.path.stat().st_size  # the layer is the archive's bulk
    proxy.faults.cut(2 * 1024 * 1024, is_patch, forward=True)
    result = push(proxy, facts, repo)  # one run, no rerun
    assert result.changed and result.blobs_uploaded == 2
    assert [seen[2] for seen in _patches(proxy)][0] == -1
    assert proxy.faults.body_bytes["PATCH"] < 1.2 * blob
    assert tags(rig, repo) == ["1.0"]
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


def test_a_cut_in_a_later_chunk_after_part_reached_the_registry_replays_the_blob(rig, proxy, tmp_path):
    """A session lost after whole chunks: the blob's earlier bytes are read again from the archive and sent to a
    new session, then the upload goes on; the run finishes."""
    facts = _big_layer_archive(tmp_path, 3, compress=True)
    repo = f"faults/replay-{uuid.uuid4().hex[:6]}"
    patches: list[str] = []
    third_patch = nth_patch(3, patches)
    proxy.faults.cut(1024 * 1024, third_patch, forward=True)
    result = push(proxy, facts, repo)
    assert result.blobs_uploaded == 2
    assert [seen[2] for seen in _patches(proxy)][:3] == [202, 202, -1]
    assert sum(1 for seen in proxy.faults.seen if seen[0] == "POST") == 3  # layer, layer again, config
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


class Wavering(Compression):
    """The compressor, except that the first block compressed for the `time`-th time comes out as other bytes (a
    valid gzip member of the same block): what isal now and then does, which cannot be made to happen on demand."""

    def __init__(self, time: int) -> None:
        super().__init__()
        self.time, self.done, self.seen, self.lock = time, False, {}, threading.Lock()

    def compress(self, block: bytes) -> bytes:
        key = hashlib.sha256(block).digest()
        with self.lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            other = not self.done and self.seen[key] == self.time
            self.done = self.done or other
        return gzip.compress(block, compresslevel=9, mtime=0) if other else super().compress(block)


def test_a_lost_session_resent_from_a_second_compression_that_came_out_otherwise_still_lands(rig, proxy, tmp_path):
    """The blob's first bytes, compressed again for a new session, come out otherwise in one block: that block is
    compressed again until it matches what was sent, so the registry gets the blob the digest names."""
    facts = _big_layer_archive(tmp_path, 3, compress=True)
    repo = f"faults/wavering-{uuid.uuid4().hex[:6]}"
    compression = Wavering(time=2)
    proxy.faults.cut(1024 * 1024, nth_patch(3, []), forward=True)
    result = push(proxy, facts, repo, compression=compression)
    assert compression.done and result.blobs_uploaded == 2
    assert sum(1 for seen in proxy.faults.seen if seen[0] == "POST") == 3  # layer, layer again, config
    assert not [seen for seen in proxy.faults.seen if seen[0] == "PUT" and seen[2] == 400]  # no digest refused
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


def test_a_push_that_spools_its_layers_resends_a_lost_session_from_the_spool(rig, proxy, tmp_path):
    """The first push of a fleet writes each layer to the spool as it sends it: what a lost session held is read
    back from there, so no block is compressed a second time (and none can come out otherwise)."""
    facts = _big_layer_archive(tmp_path, 3, compress=True)
    repo = f"faults/spooled-{uuid.uuid4().hex[:6]}"
    compression = Wavering(time=2)
    proxy.faults.cut(1024 * 1024, nth_patch(3, []), forward=True)
    result = push(proxy, facts, repo, compression=compression, spool=BlobSpool(str(tmp_path / "spool"), 1 << 30))
    assert result.blobs_uploaded == 2
    assert sum(1 for seen in proxy.faults.seen if seen[0] == "POST") == 3  # layer, layer again, config
    assert not compression.done  # no block was compressed twice
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


def test_a_lost_session_whose_first_compression_was_the_odd_one_fails_clearly_and_stores_nothing(
        rig, proxy, tmp_path):
    """The bytes the registry lost cannot be made again: the push stops with what happened and what to do, before
    the registry is asked to store a blob under a digest it does not have, and no tag appears."""
    facts = _big_layer_archive(tmp_path, 3, compress=True)
    repo = f"faults/odd-{uuid.uuid4().hex[:6]}"
    proxy.faults.cut(1024 * 1024, nth_patch(3, []), forward=True)
    with pytest.raises(BlobChanged, match=r"lost its upload session.*other bytes.*nothing of this layer was stored"):
        push(proxy, facts, repo, compression=Wavering(time=1))
    assert not [seen for seen in proxy.faults.seen if seen[0] == "PUT"]
    assert tags(rig, repo) is None


def test_a_lost_answer_to_a_stored_patch_resumes_in_the_same_run(rig, proxy, tmp_path):
    """The registry stored the whole chunk but its answer never came back: no empty PATCH (416), no failed run."""
    facts = _big_layer_archive(tmp_path, 4)
    repo = f"faults/lost-{uuid.uuid4().hex[:6]}"
    proxy.faults.lose_answer(is_patch)
    result = push(proxy, facts, repo)
    assert result.changed and result.blobs_uploaded == 2
    assert not [seen for seen in proxy.faults.seen if seen[2] == 416]
    assert proxy.faults.body_bytes["PATCH"] < facts.path.stat().st_size + 1.1 * CHUNK
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


# --- registries that answer chunks their own way ------------------------------------------------------------------

def test_a_registry_answering_chunks_as_ecr_does_gets_the_whole_image(rig, proxy, tmp_path):
    """Amazon ECR answers 201 (not the 202 of the distribution spec) to each PATCH of a chunked upload, and its Range
    does not advance past the first chunk: the pusher counts what it sent itself and takes 201 as stored."""
    facts = _big_layer_archive(tmp_path, 3)
    repo = f"faults/ecr-{uuid.uuid4().hex[:6]}"
    proxy.faults.ecr_like = True
    result = push(proxy, facts, repo)
    assert result.blobs_uploaded == 2
    statuses = [seen[2] for seen in _patches(proxy)]
    assert len(statuses) > 3 and set(statuses) == {201}  # several chunks of one layer, each answered as ECR does
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)
