from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    COMPRESS_BLOCK,
    BlobStream,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import (
    USERS,
    BlobSpool,
    SpoolError,
    SpoolSession,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Layer, Member
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _blob_spool

DATA = os.urandom(3 * 1024 * 1024) + b"\0" * (2 * 1024 * 1024)  # larger than a compression block, partly compressible
COMPRESSION = Compression()


def layer(data: bytes = DATA) -> Layer:
    return Layer(Member("abc/layer.tar", 0, len(data), data[:4]), diff_id="sha256:" + hashlib.sha256(data).hexdigest(),
                 compressed=False)


def chunks(data: bytes = DATA):
    return iter([data[i:i + 65536] for i in range(0, len(data), 65536)])


class Uploads:
    """Stands in for the registry client: keeps what each upload was sent, and which sessions were cancelled."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.sent: list[bytes] = []
        self.cancelled: list[int] = []
        self.hold = hold

    def upload(self, pieces, replay):
        if self.hold is not None:
            self.hold.wait(30)
        self.sent.append(b"".join(pieces))
        return len(self.sent) - 1

    def cancel(self, upload):
        self.cancelled.append(upload)


def send(session: SpoolSession, uploads: Uploads, data: bytes = DATA):
    item = layer(data)
    return session.send(BlobStream(item, COMPRESSION), chunks(data), lambda: BlobStream(item, COMPRESSION),
                        lambda member: chunks(data), uploads.upload, uploads.cancel)


def expected() -> tuple[bytes, str]:
    blob = BlobStream(layer(), COMPRESSION)
    body = b"".join(blob.pieces(chunks()))
    return body, blob.blob_digest()


def archive(tmp_path, name="a.tar"):
    path = tmp_path / name
    if not path.exists():  # written once: a rewritten file is another archive, with a spool of its own
        path.write_bytes(b"archive")
    return str(path)


def test_the_second_push_uploads_what_the_first_compressed_and_the_last_one_out_removes_it(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first, second = spool.join(archive(tmp_path), COMPRESSION), spool.join(archive(tmp_path), COMPRESSION)
    assert first.directory == second.directory
    one, two = Uploads(), Uploads()
    sent_first, sent_second = send(first, one), send(second, two)
    body, digest = expected()
    assert one.sent == [body] and two.sent == [body]
    assert sent_first.blob_digest == sent_second.blob_digest == digest
    assert sent_first.source_digest == sent_second.source_digest == layer().diff_id
    assert (first.reused, second.reused) == (0, 1)
    assert oct(os.stat(tmp_path / "spool").st_mode & 0o777) == "0o700"
    first.leave()
    assert os.path.isdir(second.directory)
    second.leave()
    assert not os.path.exists(second.directory)


def test_a_push_that_finds_the_layer_being_compressed_waits_for_it(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first, second = spool.join(archive(tmp_path), COMPRESSION), spool.join(archive(tmp_path), COMPRESSION)
    hold = threading.Event()
    producer = Uploads(hold)
    thread = threading.Thread(target=send, args=(first, producer))
    thread.start()
    deadline = time.monotonic() + 10
    while not any(name.endswith(".lock") for name in os.listdir(first.directory)) and time.monotonic() < deadline:
        time.sleep(0.01)
    follower = Uploads()
    waiting = threading.Thread(target=send, args=(second, follower))
    waiting.start()
    time.sleep(0.3)
    assert follower.sent == []  # held behind the producer's lock, not compressing on its own
    hold.set()
    thread.join(30)
    waiting.join(30)
    assert follower.sent == producer.sent == [expected()[0]] and second.reused == 1


def test_a_half_written_or_damaged_blob_is_not_trusted(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first = spool.join(archive(tmp_path), COMPRESSION)
    send(first, Uploads())
    entry = first.entry(layer().member.name)
    body, digest = expected()
    damaged = bytearray(body)
    damaged[100] ^= 0xFF
    with open(entry.blob_path, "wb") as handle:  # same size, other bytes: caught by the digest of what is sent
        handle.write(bytes(damaged))
    second, uploads = spool.join(archive(tmp_path), COMPRESSION), Uploads()
    sent = send(second, uploads)
    assert uploads.cancelled == [0] and uploads.sent[-1] == body and sent.blob_digest == digest
    assert second.reused == 0
    with open(entry.blob_path, "wb") as handle:  # cut short (a writer that died): caught by its size
        handle.write(body[:1000])
    third, uploads = spool.join(archive(tmp_path), COMPRESSION), Uploads()
    assert send(third, uploads).blob_digest == digest and uploads.sent == [body] and third.reused == 0


def test_a_blob_made_from_other_layer_bytes_is_not_used(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first = spool.join(archive(tmp_path), COMPRESSION)
    send(first, Uploads())
    other = os.urandom(len(DATA))  # this push read something else under the same member name
    second, uploads = spool.join(archive(tmp_path), COMPRESSION), Uploads()
    sent = send(second, uploads, other)
    assert sent.source_digest == layer(other).diff_id and second.reused == 0 and uploads.cancelled == []


def test_a_full_spool_only_costs_compressing_again(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1024)
    first, second = spool.join(archive(tmp_path), COMPRESSION), spool.join(archive(tmp_path), COMPRESSION)
    one, two = Uploads(), Uploads()
    send(first, one)
    send(second, two)
    assert one.sent == two.sent == [expected()[0]] and second.reused == 0
    assert not [name for name in os.listdir(first.directory) if name.endswith((".blob", ".part"))]


def test_what_a_crashed_push_left_is_removed_by_the_next_run(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    crashed = subprocess.run([sys.executable, "-c", f"""
import sys; sys.path[:0] = {sys.path!r}
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import BlobSpool
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import Compression
session = BlobSpool({str(tmp_path / "spool")!r}, 1 << 30).join({archive(tmp_path, "old.tar")!r}, Compression())
open(session.directory + "/x.1.part", "wb").write(b"half a blob")
print(session.directory)
"""], capture_output=True, text=True, check=True)  # exits without leaving, as a killed push would
    left = crashed.stdout.strip()
    assert os.listdir(os.path.join(left, USERS))
    session = spool.join(archive(tmp_path), COMPRESSION)
    assert not os.path.exists(left)
    assert os.path.isdir(session.directory)


def test_a_live_push_keeps_its_spool_when_another_archive_is_pushed(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    running = spool.join(archive(tmp_path, "one.tar"), COMPRESSION)
    spool.join(archive(tmp_path, "two.tar"), COMPRESSION)
    assert os.path.isdir(running.directory)


def test_nothing_is_spooled_without_compression_or_a_file(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    assert spool.join(archive(tmp_path), Compression("none")) is None
    assert spool.join(str(tmp_path / "missing.tar"), COMPRESSION) is None


def test_a_loose_spool_root_is_made_private(tmp_path):
    root = tmp_path / "spool"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    BlobSpool(str(root), 1 << 30).join(archive(tmp_path), COMPRESSION)
    assert os.stat(root).st_mode & 0o077 == 0


def test_an_unusable_spool_fails_clearly_when_named_and_is_skipped_when_default(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    named = BlobSpool(str(blocked / "spool"), 1 << 30)
    try:
        named.join(archive(tmp_path), COMPRESSION)
    except SpoolError as exc:
        assert "spool_dir" in str(exc) and str(blocked) in str(exc)
    else:
        raise AssertionError("a spool directory that cannot be made was accepted")
    assert BlobSpool(str(blocked / "spool"), 1 << 30, required=False).join(archive(tmp_path), COMPRESSION) is None


def test_a_rewritten_archive_gets_a_spool_of_its_own(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    path = archive(tmp_path)
    before = spool.join(path, COMPRESSION)
    with open(path, "ab") as handle:
        handle.write(b"more")
    assert spool.join(path, COMPRESSION).directory != before.directory


class Trickle(Uploads):
    """An upload that takes the blob's pieces one at a time and records them as they come; `pause` stops it after
    its first piece until `go` is set (a writer that is slow to finish its layer)."""

    def __init__(self, pause: bool = False) -> None:
        super().__init__()
        self.pieces: list[bytes] = []
        self.paused, self.go = threading.Event(), threading.Event()
        self.pause = pause

    def upload(self, pieces, replay):
        for piece in pieces:
            self.pieces.append(piece)
            if self.pause and not self.go.is_set():
                self.paused.set()
                self.go.wait(30)
        return super().upload(iter(self.pieces), replay)


def test_a_waiting_push_uploads_the_layer_while_it_is_being_written(tmp_path, monkeypatch):
    """Per layer, not per blob: the follower's upload has the writer's first bytes while the writer is still at it."""
    monkeypatch.setattr(_blob_spool, "CHUNK", 1024)  # a follower reads whole upload chunks: the first piece makes one
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first, second = spool.join(archive(tmp_path), COMPRESSION), spool.join(archive(tmp_path), COMPRESSION)
    writer, follower = Trickle(pause=True), Trickle()
    producing = threading.Thread(target=send, args=(first, writer))
    producing.start()
    assert writer.paused.wait(10)
    following = threading.Thread(target=send, args=(second, follower))
    following.start()
    deadline = time.monotonic() + 10
    while not follower.pieces and time.monotonic() < deadline:
        time.sleep(0.01)
    written = sum(len(piece) for piece in writer.pieces)
    assert 0 < sum(len(piece) for piece in follower.pieces) <= written < len(expected()[0])
    writer.go.set()
    producing.join(30)
    following.join(30)
    assert follower.sent == writer.sent == [expected()[0]] and second.reused == 1 and follower.cancelled == []


def test_a_push_following_an_index_reads_nothing_and_waits_for_the_layer_while_its_writer_may_come(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first, second = spool.join(archive(tmp_path), COMPRESSION), spool.join(archive(tmp_path), COMPRESSION)
    coming = threading.Event()
    second.producer_alive = lambda: not coming.is_set()
    item, follower, outcome = layer(), Uploads(), {}

    def unread(member):
        raise AssertionError("a follower read the archive")

    def follow():
        outcome["sent"] = second.send(BlobStream(item, COMPRESSION), None, lambda: BlobStream(item, COMPRESSION),
                                      unread, follower.upload, follower.cancel)

    following = threading.Thread(target=follow)
    following.start()
    time.sleep(0.3)
    assert follower.sent == [] and following.is_alive()  # the layer is not reached yet: it waits, it compresses nothing
    send(first, Uploads())
    coming.set()
    following.join(30)
    body, digest = expected()
    assert follower.sent == [body] and outcome["sent"].blob_digest == digest
    assert outcome["sent"].source_digest == item.diff_id and second.reused == 1


def test_a_writer_that_dies_mid_blob_leaves_the_follower_compressing_it_itself(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first, second = spool.join(archive(tmp_path), COMPRESSION), spool.join(archive(tmp_path), COMPRESSION)
    entry = first.entry(layer().member.name)
    assert entry.try_lock()
    out = entry.writer()
    out.write(expected()[0][:100_000])
    out.flush()
    uploads, outcome = Uploads(), {}
    following = threading.Thread(target=lambda: outcome.update(sent=send(second, uploads)))
    following.start()
    time.sleep(0.3)
    entry.unlock()  # it died: its lock goes, its blob was never published
    following.join(30)
    body, digest = expected()
    assert uploads.cancelled == [0] and uploads.sent[-1] == body and outcome["sent"].blob_digest == digest
    assert second.reused == 0


def test_an_archive_rewritten_in_place_with_its_old_mtime_gets_a_spool_of_its_own(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    path = archive(tmp_path)
    before = spool.join(path, COMPRESSION)
    stats = os.stat(path)
    time.sleep(0.02)
    with open(path, "r+b") as handle:  # same size, same inode
        handle.write(b"ARCHIVE")
    os.utime(path, ns=(stats.st_atime_ns, stats.st_mtime_ns))  # the old modification time put back
    assert spool.join(path, COMPRESSION).directory != before.directory


def test_a_follower_sends_whole_chunks_from_a_mapping_of_the_spool_file(tmp_path, monkeypatch):
    """Mapped, not read: the bytes are the file's, and the upload gets a view of the page cache, not a copy."""
    monkeypatch.setattr(_blob_spool, "CHUNK", 64 * 1024)
    path = tmp_path / "blob"
    data = os.urandom(3 * 64 * 1024 + 100)
    path.write_bytes(data)
    with open(path, "rb") as handle:
        pieces = [_blob_spool.next_chunk(handle) for _chunk in range(3)]
        assert handle.tell() == 3 * 64 * 1024 and handle.read() == data[-100:]
    assert all(isinstance(piece, memoryview) for piece in pieces)
    assert b"".join(pieces) == data[:3 * 64 * 1024]


def test_a_chunk_the_page_size_does_not_divide_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(_blob_spool, "CHUNK", 1000)
    path = tmp_path / "blob"
    data = os.urandom(5000)
    path.write_bytes(data)
    with open(path, "rb") as handle:
        first, second = _blob_spool.next_chunk(handle), _blob_spool.next_chunk(handle)  # offsets 0 and 1000
    assert isinstance(first, memoryview) and isinstance(second, bytes)
    assert bytes(first) + second == data[:2000]


def test_a_follower_uploads_mapped_chunks_that_are_the_writers_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(_blob_spool, "CHUNK", 1024 * 1024)  # DATA compresses to several whole chunks
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    first, second = spool.join(archive(tmp_path), COMPRESSION), spool.join(archive(tmp_path), COMPRESSION)
    writer, follower = Uploads(), Trickle()
    send(first, writer)
    send(second, follower)
    assert any(isinstance(piece, memoryview) for piece in follower.pieces)
    assert follower.sent == writer.sent == [expected()[0]] and second.reused == 1


class Resending(Uploads):
    """An upload whose registry loses the session once the blob is sent: it asks `replay()` for the bytes again."""

    def __init__(self) -> None:
        super().__init__()
        self.resent: list[bytes] = []

    def upload(self, pieces, replay):
        sent = super().upload(pieces, replay)
        self.resent.append(b"".join(replay()))
        return sent


class Counting(Compression):
    """The compressor, counting the blocks it compresses."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def compress(self, block: bytes) -> bytes:
        self.calls += 1
        return super().compress(block)


BLOCKS = -(-len(DATA) // COMPRESS_BLOCK)


def test_the_writer_resends_what_it_spooled_and_compresses_nothing_again(tmp_path):
    """The spooled bytes are the ones sent: read back, they need no second compression (which isal, now and then,
    would make other bytes)."""
    spool = BlobSpool(str(tmp_path / "spool"), 1 << 30)
    item, uploads, counting = layer(), Resending(), Counting()
    spool.join(archive(tmp_path), COMPRESSION).send(BlobStream(item, counting), chunks(),
                                                    lambda: BlobStream(item, counting), lambda member: chunks(),
                                                    uploads.upload, uploads.cancel)
    assert uploads.resent == uploads.sent == [expected()[0]]
    assert counting.calls == BLOCKS


def test_with_a_full_spool_the_writer_resends_a_checked_second_compression(tmp_path):
    spool = BlobSpool(str(tmp_path / "spool"), 1024)
    item, uploads, counting = layer(), Resending(), Counting()
    spool.join(archive(tmp_path), COMPRESSION).send(BlobStream(item, counting), chunks(),
                                                    lambda: BlobStream(item, counting), lambda member: chunks(),
                                                    uploads.upload, uploads.cancel)
    assert uploads.resent == uploads.sent == [expected()[0]]
    assert counting.calls == 2 * BLOCKS
