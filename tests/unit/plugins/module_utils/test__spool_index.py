"""The archive's index in the spool: published by the push that reads the archive, followed by the others."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import Compression
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import BlobSpool
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Archive
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._spool_index import (
    IndexLost,
    SpoolIndex,
)
from fixtures.image_archives import write_docker_archive


@pytest.fixture
def archive(tmp_path):
    return write_docker_archive(tmp_path / "a.tar.gz", ["pps:1"], [{"model.bin": os.urandom(200_000)},
                                                                   {"etc/pps.conf": b"threads=4\n"}], compress=True)


def indexes(tmp_path, path, count=2):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    return [SpoolIndex(spool.join(str(path), Compression())) for _push in range(count)]


def test_one_push_indexes_the_archive_and_the_other_gets_the_same_image_without_reading_it(tmp_path, archive):
    writer, follower = indexes(tmp_path, archive.path)
    assert writer.claim() and not follower.claim()
    assert follower.writing() and follower.session.producer_alive() and not writer.session.producer_alive()
    scanned = Archive.scan(str(archive.path))
    writer.publish(scanned)
    writer.release()
    assert not follower.writing()
    loaded = follower.load(str(archive.path))
    assert (loaded.members, loaded.documents, loaded.order, loaded.gzipped) == \
        (scanned.members, scanned.documents, scanned.order, scanned.gzipped)
    image = loaded.select(None)
    assert image.config_digest == archive.config_digest and [layer.diff_id for layer in image.layers] == \
        archive.layer_digests
    assert b"".join(loaded.read_again(image.layers[1].member)) == \
        b"".join(scanned.read_again(scanned.select(None).layers[1].member))
    assert not SpoolIndex(follower.session).claim()  # published: nobody indexes it again


def test_a_follower_gets_each_layer_as_the_indexer_announces_it(tmp_path, archive):
    writer, follower = indexes(tmp_path, archive.path)
    assert writer.claim() and not follower.claim()
    scanned = Archive.scan(str(archive.path))
    layers = [layer.member for layer in scanned.select(None).layers]
    seen, done = [], threading.Event()

    def follow():
        for member in follower.members():
            seen.append(member)
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    writer.announce(layers[0])
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [layers[0]] and not done.is_set()  # the first layer, before the scan is over
    writer.announce(layers[1])
    writer.publish(scanned)
    assert done.wait(10) and seen == layers


def test_an_indexer_that_stops_without_publishing_sends_the_followers_to_the_archive(tmp_path, archive):
    writer, follower = indexes(tmp_path, archive.path)
    assert writer.claim() and not follower.claim()
    writer.announce(Archive.scan(str(archive.path)).select(None).layers[0].member)
    writer.release()  # it failed (or died: its lock goes with its process)
    with pytest.raises(IndexLost):
        list(follower.members())
    with pytest.raises(IndexLost):
        follower.load(str(archive.path))
    assert follower.claim()  # the follower now indexes the archive itself
    assert list(open(follower.members_path, encoding="utf-8")) == []  # the dead indexer's list is started again


def test_a_damaged_index_is_not_used(tmp_path, archive):
    writer, follower = indexes(tmp_path, archive.path)
    assert writer.claim()
    writer.publish(Archive.scan(str(archive.path)))
    writer.release()
    with open(writer.index_path, "w", encoding="utf-8") as handle:
        handle.write('{"format": 1, "members": {')
    with pytest.raises(IndexLost):
        follower.load(str(archive.path))
