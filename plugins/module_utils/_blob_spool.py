# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Compress a layer once for every push of the same archive running side by side on one machine.

A fleet (one registry per cluster) runs one push per cluster in parallel forks of one controller. Without help,
each fork compresses the same multi-GB archive again. The spool is a private directory of compressed layers,
one sub-directory per archive (path, size, mtime, inode) and compressor, one blob per archive member:

- the first push to reach a layer takes the layer's lock (fcntl), compresses it while uploading it, and writes
  the compressed bytes to `<key>.part`, which becomes the spooled blob (rename, then its JSON facts) only
  once every byte is written;
- a push that finds the lock taken follows the writer: it uploads the `.part` file's bytes as they are written,
  to an upload session of its own that stays uncommitted, and keeps it only if, once the writer let go, the
  blob's facts name a whole blob of exactly those bytes (same file, same size, the CRC-32 of what was sent; the
  registry checks the sha256 digest itself when the upload is committed, so a follower does not hash it again) and
  the source digest it expects (its own read of the layer, or the layer's diff_id from the image's config);
  otherwise it cancels the session and compresses the layer itself. A push that died mid-spool thus leaves
  nothing another push trusts;
- the first push of an archive also spools the archive's index (_spool_index): the members as its scan passes
  them, then the whole index. The others read no archive at all: they follow that index and the layers' blobs;
- each push registers itself in the sub-directory (pid and process start time); the last one to leave removes
  the sub-directory, and a later run removes any left by pushes that no longer run (a crash).

One push compresses each layer and the others send its bytes, so every registry gets the same blob digest, even
where isal, rarely, would compress the layer to other bytes a second time (docs/pps_image.md). The writer resends
what a registry lost from its own spooled bytes, for the same reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import secrets
import shutil
import stat
import threading
import time
import zlib
from contextlib import contextmanager
from typing import IO, Callable, Iterator, NamedTuple

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    BlobStream,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._json_file import write_json
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_pipeline import CHUNK
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Member

try:
    from isal.isal_zlib import crc32 as _isal_crc32
except ImportError:  # pragma: no cover - zlib's is the fallback
    _isal_crc32 = None

# CRC-32 by isal (PCLMUL, about 14 GB/s here) where it is installed, else zlib's (about 2 GB/s): the same checksum.
crc32: Callable[[bytes, int], int] = _isal_crc32 if _isal_crc32 is not None else zlib.crc32
USERS = "users"
POLL = 0.02  # seconds between looks at a blob being written, or at a layer not reached yet

# upload(pieces, replay): sends `pieces` to a new upload session, left open; `replay()` gives them again.
Upload = Callable[[Iterator[bytes], Callable[[], Iterator[bytes]]], object]


class SpoolError(MlopsError):
    """The spool directory cannot be used safely."""


class Abandoned(MlopsError):
    """A push following another push's index gave it up (that push failed): it reads the archive itself instead."""


class SpooledBlob(NamedTuple):
    """A complete compressed layer in the spool, with the digests it was written with."""

    path: str
    source_digest: str
    blob_digest: str
    size: int
    identity: tuple[int, int] = (0, 0)  # device and inode of the blob file
    crc32: int | None = None  # of the blob's bytes: a follower's check that it sent exactly them


class Sent(NamedTuple):
    """What a layer's upload ended as: the open upload, the digest of the bytes sent, of the bytes read."""

    upload: object
    blob_digest: str
    source_digest: str


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(user: str) -> bool:
    """Whether the push a user file names still runs: same pid and same start time (pids are reused)."""
    try:
        pid_text, start, _token = user.split("-", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if os.path.isdir("/proc"):
        return _start_time(pid) == start
    try:  # pragma: no cover - systems without /proc
        os.kill(pid, 0)
    except ProcessLookupError:  # pragma: no cover
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True  # pragma: no cover


@contextmanager
def _flock(path: str) -> Iterator[None]:
    """An exclusive lock on `path` (created 0600), held for the block."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _private_directory(path: str) -> None:
    """Create `path` 0700, or accept it only when it is ours and nobody else may enter it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SpoolError(f"The spool directory {path} is not a directory of this user: set spool_dir to a "
                         "directory of your own, or spool: false.")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)


def _sweep(directory: str) -> bool:
    """Drop the user files of pushes that no longer run; remove `directory` if nobody is left. True if removed."""
    users = os.path.join(directory, USERS)
    try:
        names = os.listdir(users)
    except FileNotFoundError:
        names = []
    live = [name for name in names if _alive(name)]
    for name in set(names) - set(live):
        try:
            os.unlink(os.path.join(users, name))
        except FileNotFoundError:
            pass
    if live:
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


class BlobSpool:
    """The spool root: one sub-directory per archive and compressor, shared by the pushes of one machine."""

    def __init__(self, root: str, max_bytes: int, required: bool = True) -> None:
        # `required` False (the default directory): a spool that cannot be used only costs time, the push goes on.
        self.root, self.max_bytes, self.required = root, max_bytes, required

    def join(self, archive_path: str, compression: Compression) -> "SpoolSession | None":
        """Register this push with the spool of this archive and compressor (removing what crashed runs left).

        None when there is nothing to spool (layers are not compressed, the archive is not a file), or when an
        optional spool cannot be used.
        """
        if compression.kind != "gzip" or not os.path.isfile(archive_path):
            return None
        stats = os.stat(archive_path)
        # The archive's identity, not its content: hashing a multi-GB file is the very read the spool saves. Path,
        # size, inode and mtime tell a new or replaced file; ctime (not settable by hand) also tells a file
        # rewritten in place with its mtime put back. Any change only starts a spool of its own: costs time.
        identity = f"{os.path.realpath(archive_path)}|{stats.st_size}|{stats.st_mtime_ns}|{stats.st_ctime_ns}|" \
                   f"{stats.st_ino}|{compression.key}"
        directory = os.path.join(self.root, hashlib.sha256(identity.encode()).hexdigest()[:32])
        try:
            _private_directory(self.root)
            with _flock(os.path.join(self.root, ".lock")):
                for name in os.listdir(self.root):
                    path = os.path.join(self.root, name)
                    if path != directory and os.path.isdir(path) and not os.path.islink(path):
                        _sweep(path)
                os.makedirs(os.path.join(directory, USERS), mode=0o700, exist_ok=True)
                user = f"{os.getpid()}-{_start_time(os.getpid()) or 0}-{secrets.token_hex(4)}"
                with open(os.path.join(directory, USERS, user), "w", encoding="ascii"):
                    pass
        except (OSError, SpoolError) as exc:
            if not self.required:
                return None
            if isinstance(exc, SpoolError):
                raise
            raise SpoolError(f"Cannot use the spool directory {self.root}: {exc.strerror or exc}; set spool_dir "
                             "to a writable directory, or spool: false.") from exc
        return SpoolSession(self, directory, user)


class SpoolSession:
    """One push's use of an archive's spool: send layers through it, then `leave()`."""

    def __init__(self, spool: BlobSpool, directory: str, user: str) -> None:
        self.spool, self.directory, self.user = spool, directory, user
        self._room = threading.Lock()
        self.reused = 0  # layers sent from a blob another push spooled
        # While another push may still spool a layer (it holds the archive's index): wait for it, do not compress.
        self.producer_alive: Callable[[], bool] = lambda: False
        self.abandoned = False  # set when following another push's index is given up: layers not spooled yet stop

    def leave(self) -> None:
        """Unregister; the last push to leave removes the archive's spool."""
        with _flock(os.path.join(self.spool.root, ".lock")):
            try:
                os.unlink(os.path.join(self.directory, USERS, self.user))
            except FileNotFoundError:
                pass
            _sweep(self.directory)

    def entry(self, member: str) -> "SpoolEntry":
        return SpoolEntry(self, os.path.join(self.directory, hashlib.sha256(member.encode()).hexdigest()[:32]))

    def reserve(self, estimate: int) -> bool:
        """Whether a blob of about `estimate` bytes still fits under the spool's bound."""
        with self._room:
            used = 0
            for name in os.listdir(self.directory):
                try:
                    used += os.lstat(os.path.join(self.directory, name)).st_size
                except FileNotFoundError:
                    continue
            return used + estimate <= self.spool.max_bytes

    @staticmethod
    def wants(blob: BlobStream) -> bool:
        """Whether a layer goes through the spool: every layer this push compresses (a push that follows another
        push's index reads no archive, so a layer left out would cost it a read of the archive up to the layer)."""
        return blob.compress

    def send(self, blob: BlobStream, chunks: Iterator[bytes] | None, stream: Callable[[], BlobStream],
             read_again: Callable[[Member], Iterator[bytes]], upload: Upload, cancel: Callable[[object], None],
             on_size: Callable[[int], None] | None = None) -> Sent:
        """Send one layer: compressed here (and spooled), or the blob another push spools, whichever comes first.

        `blob` compresses `chunks`, the layer's bytes from this push's own read (None: this push reads no archive
        and trusts the source digest the blob's facts name; the caller checks it against the layer's diff_id).
        `stream()` gives a fresh compressor and `read_again(member)` the layer's bytes from a read of the archive,
        for when nothing trustworthy was spooled. `on_size(size)` is told a followed blob's size once it is whole
        (a follower's progress).
        """
        member = blob.layer.member
        entry = self.entry(member.name)
        # A push following another's index leaves the layer to that push while it runs (it announced it).
        if entry.ready() is None and not (chunks is None and self.producer_alive()) and entry.try_lock():
            return self._produce(entry, member.size, blob, read_again(member) if chunks is None else chunks, upload,
                                 lambda: blob.again(read_again(member)))
        read = _drain(chunks) if chunks is not None else None  # a read under way is consumed, not left blocked
        ready = entry.ready()
        # A blob already known to come from other layer bytes than this push read is not even sent.
        mismatch = read is not None and ready is not None and ready.source_digest != read
        followed = None if mismatch else self._follow(entry, upload, cancel, chunks is None, on_size)
        if followed is not None:
            sent, ready = followed
            if read in (None, ready.source_digest):
                with self._room:
                    self.reused += 1
                return Sent(sent, ready.blob_digest, ready.source_digest)
            cancel(sent)
        if chunks is None and self.abandoned:
            raise Abandoned(f"layer {member.name}: the push this one followed failed")
        fresh = stream()
        if chunks is None and entry.try_lock():  # nobody spooled it: compress it here, for the others too
            return self._produce(entry, member.size, fresh, read_again(member), upload,
                                 lambda: fresh.again(read_again(member)))
        # nothing trustworthy spooled: compress it here after all
        sent = upload(fresh.pieces(read_again(member)), lambda: fresh.again(read_again(member)))
        return Sent(sent, fresh.blob_digest(), fresh.source_digest())

    def _follow(self, entry: "SpoolEntry", upload: Upload, cancel: Callable[[object], None], patient: bool,
                on_size: Callable[[int], None] | None = None) -> "tuple[object, SpooledBlob] | None":
        """Upload the layer's blob as its writer writes it (or whole, once written); None when nothing trustworthy
        came of it. `patient`: while the push holding the index may still reach this layer, wait for it."""
        while True:
            writing = entry.held()
            if entry.ready() is not None or (writing and os.path.exists(entry.part_path)):
                return _send_followed(entry, upload, cancel, on_size)
            if not writing and not (patient and self.producer_alive()):
                return None
            time.sleep(POLL)  # its writer is about to start it, or has not reached it yet

    def _produce(self, entry: "SpoolEntry", estimate: int, blob: BlobStream, chunks: Iterator[bytes],
                 upload: Upload, again: Callable[[], Iterator[bytes]]) -> Sent:
        """Compress and upload the layer, writing it to the spool on the way; the lock goes once it is written.
        `again()` compresses the layer again, for a resend when there is no spooled copy to read."""
        out = entry.writer() if self.reserve(estimate) else None
        if out is None:
            entry.unlock()

        def replay() -> Iterator[bytes]:
            """What was sent, for a registry that lost it: the spooled bytes (the same, not compressed again)."""
            handle = entry.open_current() if out is not None else None
            return again() if handle is None else _read_through(handle)

        def teed() -> Iterator[bytes]:
            crc = 0
            for piece in blob.pieces(chunks):
                if out is not None:
                    out.write(piece)
                    out.flush()  # a follower uploads what is in the file: nothing held back in a buffer
                    crc = crc32(piece, crc)
                yield piece
            if out is not None:
                entry.publish(out, blob.source_digest(), blob.blob_digest(), crc)

        pieces = teed()
        try:
            sent = upload(pieces, replay)
        finally:
            try:
                pieces.close()
            except ValueError:  # pragma: no cover - still running in a producer thread that did not stop in time
                pass
            entry.discard(out)
            entry.unlock()
        return Sent(sent, blob.blob_digest(), blob.source_digest())


def _read_through(handle: IO[bytes]) -> Iterator[bytes]:
    """A spooled blob's bytes written so far, in upload chunks; the file is closed at the end."""
    with handle:
        yield from iter(lambda: handle.read(CHUNK), b"")


def _drain(chunks: Iterator[bytes]) -> str:
    """Read this push's copy of a layer through, hashing it, without sending it: the digest of its bytes."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _send_followed(entry: "SpoolEntry", upload: Upload, cancel: Callable[[object], None],
                   on_size: Callable[[int], None] | None = None) -> "tuple[object, SpooledBlob] | None":
    """Upload the blob being written (or written); the session and the blob's facts when the bytes sent are exactly
    the published blob (same file, size and CRC-32), else None with the session cancelled. `on_size` is told the
    blob's size as soon as it is whole (already published, or once its writer let go)."""
    seen: dict = {"size": 0, "inode": None, "crc": 0}

    def whole(info: os.stat_result) -> None:
        """Tell `on_size` the blob's size if the file open is the published blob."""
        if on_size is None:
            return
        ready = entry.ready()
        if ready is not None and ready.identity == (info.st_dev, info.st_ino):
            on_size(ready.size)

    def pieces(hashing: bool) -> Iterator[bytes]:
        handle = entry.open_current()
        if handle is None:
            return
        with handle:
            info = os.fstat(handle.fileno())
            if hashing:
                whole(info)  # published before this push opened it
            while True:
                # Whole upload chunks, once the writer is past them: mapped, they go to the upload uncopied.
                if os.fstat(handle.fileno()).st_size - handle.tell() >= CHUNK:
                    piece = next_chunk(handle)
                    if hashing:
                        seen["crc"] = crc32(piece, seen["crc"])
                        seen["size"] += len(piece)
                    yield piece
                elif entry.held():
                    time.sleep(POLL)  # the writer is still at it
                else:
                    rest = handle.read()  # it let go: everything it wrote is in the file
                    if hashing:
                        seen["crc"] = crc32(rest, seen["crc"])
                        seen["size"] += len(rest)
                    if rest:
                        yield rest
                    break
            if hashing:
                seen["inode"] = (info.st_dev, info.st_ino)
                whole(info)  # its writer let go: published now, unless it failed (then cancelled below)

    sent = upload(pieces(True), lambda: pieces(False))
    ready = entry.ready()
    if ready is None or seen["inode"] != ready.identity or seen["size"] != ready.size or seen["crc"] != ready.crc32:
        cancel(sent)
        return None
    return sent, ready


def next_chunk(handle: IO[bytes]) -> "bytes | memoryview":
    """The next CHUNK bytes of a spooled blob, already written: mapped where the file allows it, so that the upload
    sends them from the page cache without reading them into this process first (a follower's CPU is mostly these
    copies); read where it does not. Spool files only grow until they are unlinked (never truncated), so a mapping of
    written bytes stays valid."""
    offset = handle.tell()
    if offset % mmap.ALLOCATIONGRANULARITY == 0:
        try:
            mapping = mmap.mmap(handle.fileno(), CHUNK, offset=offset, prot=mmap.PROT_READ,
                                flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except (OSError, ValueError):
            pass  # a file system without mmap: read it
        else:
            handle.seek(offset + CHUNK)
            return memoryview(mapping)
    return handle.read(CHUNK)


class SpoolEntry:
    """One layer's files in the spool: `<key>.lock`, `<key>.part` while written, then `<key>.blob` with `<key>.json`."""

    def __init__(self, session: SpoolSession, base: str) -> None:
        self.session, self.base = session, base
        self.blob_path, self.facts_path, self.part_path = base + ".blob", base + ".json", base + ".part"
        self._descriptor: int | None = None

    def ready(self) -> SpooledBlob | None:
        """The complete spooled blob, or None (not written yet, or left incomplete)."""
        try:
            with open(self.facts_path, encoding="utf-8") as handle:
                facts = json.load(handle)
            info = os.stat(self.blob_path)
            if info.st_size != facts["size"]:
                return None
            return SpooledBlob(self.blob_path, facts["source_digest"], facts["blob_digest"], facts["size"],
                               (info.st_dev, info.st_ino), facts.get("crc32"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def try_lock(self) -> bool:
        """Take the layer's lock if nobody holds it; then, if it is still not spooled, this push writes it."""
        descriptor = take(self.base + ".lock")
        if descriptor is None:
            return False
        self._descriptor = descriptor
        if self.ready() is not None:
            self.unlock()
            return False
        return True

    def held(self) -> bool:
        """Whether a push holds the layer's lock (is writing it) right now."""
        return held(self.base + ".lock")

    def unlock(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def open_current(self) -> IO[bytes] | None:
        """The blob if it is spooled, else the one being written, open for reading; None if there is neither."""
        # A blob without facts that name it whole is a leftover: follow the part (which may become the blob meanwhile).
        for path in (self.blob_path,) if self.ready() is not None else (self.part_path, self.blob_path):
            try:
                return open(path, "rb")  # pylint: disable=consider-using-with
            except FileNotFoundError:
                continue
        return None

    def writer(self) -> IO[bytes]:
        """A new `.part` file (0600) for the blob being written, under the lock; the caller closes it (`discard`)."""
        try:
            os.unlink(self.part_path)  # a writer that died left it; a follower still reading it sees another inode
        except FileNotFoundError:
            pass
        return open(self.part_path, "xb", opener=lambda name, flags: os.open(name, flags, 0o600))  # pylint: disable=R1732

    def publish(self, out: IO[bytes], source_digest: str, blob_digest: str, crc32: int) -> None:
        """Make the written blob visible: file renamed first, then its facts (so facts always name a whole file)."""
        out.flush()
        size = out.tell()
        os.replace(out.name, self.blob_path)
        write_json(self.facts_path, {"source_digest": source_digest, "blob_digest": blob_digest, "size": size,
                                     "crc32": crc32})
        self.unlock()

    @staticmethod
    def discard(out: IO[bytes] | None) -> None:
        """Close the temporary file; remove it unless it was published."""
        if out is None:
            return
        out.close()
        try:
            os.unlink(out.name)
        except FileNotFoundError:
            pass


def take(path: str) -> int | None:
    """An exclusive `flock` on `path` (created 0600) if nobody holds one: its descriptor, else None.

    Followers probe locks with a shared lock held for microseconds (`held`); a few quick retries keep such a probe
    from passing for a writer."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    for attempt in range(4):
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            time.sleep(0.002 * (attempt + 1))
    os.close(descriptor)
    return None


def held(path: str) -> bool:
    """Whether some process holds an exclusive `flock` on `path` (probed with a shared lock, let go at once)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)


def default_spool_dir() -> str:
    """The spool root used unless the caller names one: beside the push cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "datarobot_mlops", "spool")
