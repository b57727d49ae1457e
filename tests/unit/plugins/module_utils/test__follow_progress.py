"""A push that follows another push of the same archive reads none of it: its progress is each layer's share of the
archive, credited as the layer's blob is sent."""

from __future__ import annotations

import os

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import Compression
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import BlobSpool
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._follow_progress import (
    GUESS,
    UNFINISHED,
    FollowProgress,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Member
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import PushProgress
from fixtures.image_archives import write_docker_archive
from test__image_push import MemoryRegistry, fleet, pusher

ARCHIVE = 1_000_000


def follower(total: int = ARCHIVE) -> tuple[PushProgress, FollowProgress]:
    progress = PushProgress(None, "reg/pps:1", total)
    return progress, FollowProgress(progress)


def done(progress: PushProgress) -> int:
    return progress.state["bytes_done"]


def test_a_layer_is_credited_its_share_of_the_archive_as_its_blob_is_sent():
    progress, follow = follower()
    # members of 3 MB and 1 MB in a 1 MB archive (.tar.gz): each member byte is worth a quarter of an archive byte
    big, small = Member("a/layer.tar", 512, 3_000_000, b""), Member("b/layer.tar", 3_001_024, 1_000_000, b"")
    follow.index([big, small, big])  # a link names its target's member: counted once
    layer = follow.layer(big)
    layer.blob_size(600_000)
    layer.sent(150_000)
    assert done(progress) == 750_000 * 150_000 // 600_000
    layer.sent(300_000)
    assert done(progress) == 750_000 * 450_000 // 600_000
    layer.sent(150_000)  # every byte sent, not yet checked: not quite all of it
    assert done(progress) == int(750_000 * UNFINISHED)
    layer.done()
    assert done(progress) == 750_000
    other = follow.layer(small)
    other.done()
    assert done(progress) == ARCHIVE
    assert progress.state["bytes_sent"] == 0  # credits are not bytes sent


def test_a_blob_still_being_written_is_measured_by_the_blobs_already_known():
    progress, follow = follower()
    follow.index([Member("a", 0, 500_000, b""), Member("b", 500_000, 500_000, b"")])  # 1 archive byte per member byte
    first = follow.layer(Member("a", 0, 500_000, b""))
    first.sent(100_000)  # its size unknown: about half the member (GUESS)
    assert done(progress) == int(500_000 * 100_000 / (500_000 * GUESS))
    first.sent(200_000)  # more than the guess already: not past UNFINISHED of the share
    assert done(progress) == int(500_000 * UNFINISHED)
    first.blob_size(400_000)  # known now (0.8 blob bytes per member byte); 300_000 of 400_000 sent: no step back
    assert done(progress) == int(500_000 * UNFINISHED)
    first.done()
    second = follow.layer(Member("b", 500_000, 500_000, b""))
    second.sent(200_000)  # estimated from the first: 400_000 bytes
    assert done(progress) == 500_000 + 500_000 * 200_000 // 400_000


def test_before_the_index_is_complete_the_share_is_estimated_and_corrected_once_it_is():
    progress, follow = follower()
    layer = follow.layer(Member("a", 0, 800_000, b""))
    layer.blob_size(400_000)
    layer.done()  # the archive's compression taken to be the blobs' (0.5): 400_000
    assert done(progress) == 400_000
    follow.index([Member("a", 0, 800_000, b""), Member("b", 800_000, 200_000, b"")])  # exact: 800_000
    assert done(progress) == 800_000


def test_credits_never_pass_the_archive_nor_go_back():
    progress, follow = follower(total=100)
    layer = follow.layer(Member("a", 0, 1_000, b""))
    layer.blob_size(1_000)
    layer.done()  # estimated at 1 archive byte per member byte: ten times the archive
    assert done(progress) == 100
    follow.index([Member("a", 0, 1_000, b""), Member("b", 1_000, 9_000, b"")])  # exact: 10
    assert done(progress) == 100  # what was shown stays shown
    progress.read(50)
    assert done(progress) == 100
    progress.finish()
    assert progress.state["phase"] == "done" and done(progress) == 100


class Watched(MemoryRegistry):
    """A registry that tells the pusher each chunk sent, as the real client does, and notes the progress each time."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: PushProgress | None = None
        self.seen: list[int] = []
        self.bytes = 0  # sent through upload sessions, as told to the pusher

    def send(self, repository, chunks, on_progress=None, replay=None):
        def told():
            for chunk in chunks:
                yield chunk
                if on_progress:
                    self.bytes += len(chunk)
                    on_progress(len(chunk))
                self.seen.append(self.progress.state["bytes_done"])

        return super().send(repository, told(), None, replay)


def rises(values: list[int]) -> list[int]:
    return [value for index, value in enumerate(values) if value > max(values[:index], default=0)]


@pytest.mark.parametrize("compress", [True, False], ids=["tar.gz, one pass", "tar, two passes"])
@pytest.mark.parametrize("together", [False, True], ids=["one after the other", "side by side"])
def test_a_following_push_shows_rising_progress_while_it_sends(tmp_path, compress, together):
    """Before, a push that read no archive said 0 bytes done until its end; now each layer it sends adds its share."""
    layers = [{"model.bin": os.urandom(1_500_000)}, {"lib.so": os.urandom(1_000_000)}, {"data.bin": b"\0" * 900_000},
              {"etc/pps.conf": b"threads=4\n"}]
    archive = write_docker_archive(tmp_path / ("a.tar.gz" if compress else "a.tar"), ["pps:1"], layers,
                                   compress=compress)
    size = archive.path.stat().st_size
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    clients = [Watched() for _fork in range(2)]

    def push(client):
        client.progress = PushProgress(None, "reg/pps:1", size)
        return pusher(client, spool=spool, progress=client.progress).push(str(archive.path))

    results = fleet(clients, push, together, spool.join(str(archive.path), Compression()))  # the spool stays open
    followers = [client for client, result in zip(clients, results) if result.archive_bytes_read == 0]
    assert len(followers) == 1, [result.archive_bytes_read for result in results]
    seen = followers[0].seen
    assert len([value for value in rises(seen) if 0 < value < size]) >= 2, (seen, size)
    assert max(seen) <= size
    assert all(client.progress.state["bytes_done"] == size for client in clients)
    assert followers[0].progress.state["bytes_sent"] == followers[0].bytes  # credits are no bytes sent
