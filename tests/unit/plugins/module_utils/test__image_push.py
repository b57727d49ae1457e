"""DirectPusher's decisions against an in-memory registry: what is sent, skipped, mounted, and in what order."""

from __future__ import annotations

import gzip
import hashlib
import json
import itertools
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import Compression
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import BlobSpool
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import ArchiveError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_push import (
    DirectPusher,
    PushCache,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_result import (
    StoredBlob,
    tag_state,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import Blob, OpenUpload
from fixtures.image_archives import write_docker_archive

REGISTRY = "registry.test:5000"


class MemoryRegistry:
    """The calls DirectPusher makes, answered from dicts; refuse_mounts answers every mount "not from there"."""

    registry = REGISTRY

    def __init__(self, refuse_mounts: bool = False) -> None:
        self.blobs: dict[str, dict[str, bytes]] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.sessions: dict[str, bytes] = {}
        self.replays: dict = {}  # each session's way to read its blob again, as the pusher handed it
        self.replayed: list[bool] = []  # per committed session: its replay gave exactly the bytes sent
        self.refuse_mounts = refuse_mounts
        self.calls: list[str] = []
        self._numbers = itertools.count()

    def blob_size(self, repository, digest):
        found = self.blobs.get(repository, {}).get(digest)
        return None if found is None else len(found)

    def mount(self, repository, digest, source):
        self.calls.append(f"mount {source}")
        found = self.blobs.get(source, {}).get(digest)
        if self.refuse_mounts or found is None:
            return False
        self.blobs.setdefault(repository, {})[digest] = found
        return True

    def send(self, repository, chunks, on_progress=None, replay=None):
        location = f"{repository}/session{next(self._numbers)}"
        self.sessions[location] = b"".join(chunks)
        self.replays[location] = replay
        return OpenUpload(location, len(self.sessions[location]), ())

    def commit(self, upload, digest):
        data = self.sessions.pop(upload.location)
        replay = self.replays.pop(upload.location)
        if replay is not None:
            self.replayed.append(b"".join(replay()) == data)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        self.blobs.setdefault(upload.location.rsplit("/", 1)[0], {})[digest] = data
        self.calls.append("commit")
        return Blob(digest, len(data))

    def cancel(self, upload):
        self.sessions.pop(upload.location, None)

    def upload(self, repository, chunks, digest_of, on_progress=None):
        return self.commit(self.send(repository, chunks), digest_of())

    def manifest(self, repository, reference):
        body = self.manifests.get((repository, reference))
        return None if body is None else ("sha256:" + hashlib.sha256(body).hexdigest(), "", body)

    def put_manifest(self, repository, reference, body, media_type):
        self.calls.append(f"manifest {reference}")
        self.manifests[(repository, reference)] = body
        return "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.fixture
def image(tmp_path):
    return write_docker_archive(tmp_path / "a.tar", ["pps:1"], [{"model.bin": os.urandom(300_000)},
                                                                {"etc/pps.conf": b"threads=4\n"}, {}])


def pusher(client, repo="datarobot/pps", **kwargs):
    kwargs.setdefault("cache", PushCache(None))
    return DirectPusher(client, Repository.parse(f"{REGISTRY}/{repo}"), ["1.0", "latest-build"], workers=2, **kwargs)


def test_a_push_stores_every_blob_and_puts_the_manifest_last(image):
    client = MemoryRegistry()
    result = pusher(client).push(str(image.path))
    assert result.changed and result.blobs_uploaded == 4 and result.blobs_skipped == 0
    assert client.calls[-2:] == ["manifest 1.0", "manifest latest-build"]
    manifest = json.loads(client.manifests[("datarobot/pps", "1.0")])
    assert manifest["config"]["digest"] == image.config_digest
    stored = client.blobs["datarobot/pps"]
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(stored[layer["digest"]])).hexdigest()
                for layer in manifest["layers"]]
    assert diff_ids == image.layer_digests
    now = tag_state(client, Repository.parse(f"{REGISTRY}/datarobot/pps"), "1.0")
    assert now == (result.digest, image.config_digest)


def test_a_second_push_changes_nothing(image):
    client = MemoryRegistry()
    first = pusher(client).push(str(image.path))
    again = pusher(client).push(str(image.path))
    assert not again.changed and again.digest == first.digest and again.blobs_uploaded == 0


def test_the_manifest_digest_is_the_same_on_every_run(image):
    digests = {pusher(MemoryRegistry()).push(str(image.path)).digest for run in range(2)}
    assert len(digests) == 1


def _layer_sizes(path) -> int:
    import tarfile

    with tarfile.open(path) as tar:
        return sum(info.size for info in tar.getmembers() if info.name.endswith("layer.tar"))


def test_check_mode_sends_and_compresses_nothing_and_says_how_much_it_would_push(image):
    client = MemoryRegistry()
    checked = pusher(client, check_mode=True).push(str(image.path))
    assert client.blobs == {} and client.manifests == {} and client.sessions == {}
    assert len(checked.would_upload) == 4  # three layers and the config
    assert checked.bytes_compressed == 0 and "compress" not in checked.phases
    config = tarfile_member(image.path, image.config_digest[7:] + ".json")
    assert checked.would_upload_bytes == _layer_sizes(image.path) + len(config)
    assert re.fullmatch(r"would push 3 layers, about \d+(\.\d)? kB before compression", checked.message)
    assert checked.digest == ""  # not known before the layers are compressed
    pushed = pusher(client).push(str(image.path))
    # the counter does count (this test registry also reads every blob again, compressing it a second time)
    assert pushed.bytes_compressed >= _layer_sizes(image.path) and not pushed.message


def test_check_mode_predicts_the_digest_from_what_the_cache_remembers(image, tmp_path):
    client = MemoryRegistry()
    cache = str(tmp_path / "cache.json")
    pusher(client, "datarobot/first", cache=PushCache(cache)).push(str(image.path))
    checked = pusher(client, "datarobot/second", cache=PushCache(cache), check_mode=True).push(str(image.path))
    assert checked.bytes_compressed == 0 and checked.blobs_mounted == 3  # would mount: HEAD on the source only
    assert checked.would_upload == ["config " + image.config_digest] and "datarobot/second" not in client.blobs
    assert checked.digest == pusher(client, "datarobot/second", cache=PushCache(cache)).push(str(image.path)).digest


@pytest.mark.parametrize("with_cache", [True, False], ids=["cache", "no cache"])
def test_check_mode_on_an_unchanged_tag_does_what_the_no_op_does(tmp_path, with_cache):
    packed = write_docker_archive(tmp_path / "a.tar.gz", ["pps:1"], [{"model.bin": os.urandom(300_000)}], compress=True)
    client = MemoryRegistry()
    cache = str(tmp_path / "cache.json") if with_cache else None
    first = pusher(client, cache=PushCache(cache)).push(str(packed.path))
    runs = [pusher(client, cache=PushCache(cache), check_mode=check).push(str(packed.path)) for check in (False, True)]
    for run in runs:
        assert not run.changed and run.digest == first.digest and run.bytes_compressed == 0
    assert set(runs[0].phases) == set(runs[1].phases)  # the same work, phase by phase
    # without the cache both index the archive (decompressing it); with it, neither opens the archive
    assert set(runs[1].phases) == (set() if with_cache else {"decompress"})


def test_blobs_remembered_elsewhere_are_mounted(image, tmp_path):
    client, cache = MemoryRegistry(), PushCache(str(tmp_path / "cache.json"))
    pusher(client, "datarobot/first", cache=cache).push(str(image.path))
    second = pusher(client, "datarobot/second", cache=PushCache(str(tmp_path / "cache.json"))).push(str(image.path))
    assert second.blobs_mounted == 3 and second.blobs_uploaded == 1  # the config is sent again


def test_a_refused_mount_is_uploaded_instead(image, tmp_path):
    client, cache = MemoryRegistry(refuse_mounts=True), PushCache(str(tmp_path / "cache.json"))
    pusher(client, "datarobot/first", cache=cache).push(str(image.path))
    second = pusher(client, "datarobot/second", cache=PushCache(str(tmp_path / "cache.json"))).push(str(image.path))
    assert "mount datarobot/first" in client.calls
    assert second.blobs_mounted == 0 and second.blobs_uploaded == 4


def test_uncompressed_layers_stay_uncompressed_under_an_oci_manifest(image):
    client = MemoryRegistry()
    result = pusher(client, compression=Compression("none")).push(str(image.path))
    manifest = json.loads(client.manifests[("datarobot/pps", "1.0")])
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert [layer["digest"] for layer in manifest["layers"]] == image.layer_digests
    assert result.blobs_uploaded == 4


def test_docker_manifests_need_gzip_layers(image):
    with pytest.raises(ArchiveError, match="manifest_format docker needs gzip layers"):
        pusher(MemoryRegistry(), compression=Compression("none"), manifest_format="docker").push(str(image.path))


def test_stored_blobs_are_named_tuples():
    blob = StoredBlob("sha256:x", 3)
    digest, size = blob
    assert (digest, size) == (blob.digest, blob.size)


def test_a_gzip_archive_pushed_in_one_pass_gives_the_same_image_and_leaves_no_session_open(tmp_path):
    layers = [{"model.bin": os.urandom(3_000_000)}, {"etc/pps.conf": b"threads=4\n"}]
    plain = write_docker_archive(tmp_path / "a.tar", ["pps:1"], layers)
    packed = write_docker_archive(tmp_path / "a.tar.gz", ["pps:1"], layers, compress=True)
    client = MemoryRegistry()
    one_pass = pusher(client, "datarobot/gz").push(str(packed.path))
    assert client.sessions == {} and one_pass.blobs_uploaded == 3
    assert one_pass.digest == pusher(MemoryRegistry()).push(str(plain.path)).digest


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_every_blob_can_be_read_again_byte_for_byte_for_a_new_session(tmp_path, compress):
    """A registry that drops a session gets the blob again from the archive: the same bytes, compressed again."""
    layers = [{"model.bin": os.urandom(3_000_000)}, {"etc/pps.conf": b"threads=4\n"}, {"big": os.urandom(5_000_000)}]
    facts = write_docker_archive(tmp_path / "a.tar", ["pps:1"], layers, compress=compress)
    client = MemoryRegistry()
    pusher(client).push(str(facts.path))
    assert client.replayed == [True, True, True]  # the three layers (the config is sent from memory)


def _respelled(facts, path, corrupt: bytes, rename: dict[str, str], compress: bool):
    """The archive with members renamed (manifest.json follows) and the layer holding `corrupt` changed."""
    import io
    import tarfile

    members = []
    with tarfile.open(facts.path) as src:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else b""
            if info.name == "manifest.json":
                manifest = json.loads(data)
                manifest[0]["Layers"] = [rename.get(name, name) for name in manifest[0]["Layers"]]
                data = json.dumps(manifest).encode()
            if corrupt in data and info.name.endswith("layer.tar"):
                data = data.replace(corrupt, corrupt.upper())
            info.name, info.size = rename.get(info.name, info.name), len(data)
            members.append((info, data))
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as out, tarfile.open(fileobj=out, mode="w|") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz (one pass)"])
def test_a_corrupt_small_layer_leaves_no_blob_and_no_session(tmp_path, compress):
    """The big layer is fine and read first; the small one, under a name the scan does not stream, is corrupt:
    nothing may be committed, and every session opened is cancelled."""
    layers = [{"model.bin": os.urandom(5_000_000)}, {"etc/pps.conf": b"threads=4\n"}]
    facts = write_docker_archive(tmp_path / "a.tar", ["pps:1"], layers)
    small = json.loads(tarfile_member(facts.path, "manifest.json"))[0]["Layers"][1]
    path = _respelled(facts, tmp_path / ("b.tar.gz" if compress else "b.tar"), b"threads=4",
                      {small: "zz-small-layer"}, compress)
    client = MemoryRegistry()
    with pytest.raises(ArchiveError, match="does not match its digest"):
        pusher(client).push(str(path))
    assert client.blobs == {} and client.sessions == {} and client.manifests == {}


def fleet(clients, push, together: bool, holder) -> list:
    """Each client's push, one after the other or side by side (threads started at once, as forks are); `holder`,
    a spool session kept open meanwhile (a fork still running), leaves at the end."""
    start = threading.Barrier(len(clients))

    def one(client):
        if together:
            start.wait(10)
        return push(client)

    try:
        if together:
            with ThreadPoolExecutor(len(clients)) as pool:
                return list(pool.map(one, clients))
        return [one(client) for client in clients]
    finally:
        holder.leave()


def tarfile_member(path, name):
    import tarfile

    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


@pytest.mark.parametrize("compress", [True, False], ids=["tar.gz, one pass", "tar, two passes"])
@pytest.mark.parametrize("together", [False, True], ids=["one after the other", "side by side"])
def test_pushes_of_one_archive_read_it_once_and_get_the_same_image(tmp_path, compress, together):
    """A fleet: one push per registry, the spool open throughout (a fork still running). One push reads the archive;
    the others follow its spooled index and blobs, read none of it, compress nothing, and store the same image."""
    layers = [{"model.bin": os.urandom(3_000_000)}, {"lib.so": b"\0" * 2_500_000}, {"etc/pps.conf": b"threads=4\n"}]
    archive = write_docker_archive(tmp_path / ("a.tar.gz" if compress else "a.tar"), ["pps:1"], layers,
                                   compress=compress)
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    clients = [MemoryRegistry() for _fork in range(3)]
    results = fleet(clients, lambda client: pusher(client, spool=spool).push(str(archive.path)), together,
                    spool.join(str(archive.path), Compression()))
    size = archive.path.stat().st_size
    assert sorted(result.archive_bytes_read > 0 for result in results) == [False, False, True], results
    assert all(result.archive_bytes_read >= size for result in results if result.archive_bytes_read)
    assert sorted(result.bytes_compressed > 0 for result in results) == [False, False, True]
    assert sum(result.blobs_from_spool for result in results) == 2 * len(layers)
    assert len({result.digest for result in results}) == 1 and all(client.sessions == {} for client in clients)
    assert all(client.blobs["datarobot/pps"] == clients[0].blobs["datarobot/pps"] for client in clients)
    assert not os.listdir(tmp_path / "spool") or os.listdir(tmp_path / "spool") == [".lock"]


def test_check_mode_writes_no_cache(image, tmp_path):
    cache = tmp_path / "cache" / "pps_image.json"
    pusher(MemoryRegistry(), cache=PushCache(str(cache)), check_mode=True).push(str(image.path))
    assert not cache.exists() and not cache.parent.exists()


def test_a_cache_that_cannot_be_written_is_a_warning_and_the_push_is_done(image, tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    cache = in_the_way / "sub" / "pps_image.json"  # under a file: cannot be made
    client = MemoryRegistry()
    push = pusher(client, cache=PushCache(str(cache)))
    result = push.push(str(image.path))
    assert result.changed and ("datarobot/pps", "1.0") in client.manifests
    assert len(push.warnings) == 1 and f"cache {cache} could not be written" in push.warnings[0]
    assert "the push itself is done" in push.warnings[0]


@pytest.mark.parametrize("body", [b"not json", b'["a", "list"]', b'{"config": "no object"}', b'{"config": {}}'])
def test_a_tag_whose_manifest_names_no_config_has_none(body):
    """What a registry serves under a tag may be no manifest object: the tag still has its digest, and no config
    (a list or a string there raised AttributeError)."""
    class Served:
        def manifest(self, path, tag):
            return ("sha256:" + "d" * 64, "application/json", body)

    assert tag_state(Served(), Repository.parse(f"{REGISTRY}/datarobot/pps"), "1.0") == ("sha256:" + "d" * 64, None)
