# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Compress a layer once for every push of the same archive running side by side on one machine.

A fleet (one registry per cluster) runs one push per cluster in parallel forks of one controller. Without help,
each fork compresses the same multi-GB archive again. The spool is a private directory of compressed layers,
one sub-directory per archive (path, size, mtime, inode) and compressor, one blob per archive member:

- the first push to reach a layer takes the layer's lock (fcntl), compresses it while uploading it, and writes
  the compressed bytes to a temporary file that becomes the spooled blob (rename, then its JSON facts) only
  once every byte is written;
- a push that finds the lock taken reads the layer from its own archive only to hash it, waits for the lock,
  and uploads the spooled blob if the blob's facts name the same source digest (its own read) and the bytes it
  sends hash to the blob digest the facts name; otherwise it compresses the layer itself. A push that died
  mid-spool thus leaves nothing another push trusts;
- each push registers itself in the sub-directory (pid and process start time); the last one to leave removes
  the sub-directory, and a later run removes any left by pushes that no longer run (a crash).

Compression is deterministic (fixed blocks, no timestamp), so whichever push compresses a layer, every registry
gets the same blob digest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import threading
from contextlib import contextmanager
from typing import IO, Callable, Iterator, NamedTuple

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    BlobStream,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Member

READ_SIZE = 1024 * 1024
WORTH_SPOOLING = 1024 * 1024  # smaller layers compress in less time than the spool's files cost
USERS = "users"

# upload(pieces, replay): sends `pieces` to a new upload session, left open; `replay()` gives them again (None: the
# pusher's own way, a second read of the archive).
Upload = Callable[[Iterator[bytes], "Callable[[], Iterator[bytes]] | None"], object]


class SpoolError(MlopsError):
    """The spool directory cannot be used safely."""


class SpooledBlob(NamedTuple):
    """A complete compressed layer in the spool, with the digests it was written with."""

    path: str
    source_digest: str
    blob_digest: str
    size: int


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
        identity = f"{os.path.realpath(archive_path)}|{stats.st_size}|{stats.st_mtime_ns}|{stats.st_ino}|" \
                   f"{compression.key}"
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
        """Whether a layer is worth spooling: it gets compressed, and is not tiny."""
        return blob.compress and blob.layer.member.size >= WORTH_SPOOLING

    def send(self, blob: BlobStream, chunks: Iterator[bytes], stream: Callable[[], BlobStream],
             read_again: Callable[[Member], Iterator[bytes]], upload: Upload, cancel: Callable[[object], None]) -> Sent:
        """Send one layer: compressed here (and spooled), or the blob another push spooled, whichever comes first.

        `blob` compresses `chunks`, the layer's bytes from the read under way; `stream()` gives a fresh compressor
        and `read_again(member)` the layer's bytes from a second read of the archive, for when nothing trustworthy
        was spooled.
        """
        member = blob.layer.member
        entry = self.entry(member.name)
        ready = entry.ready()
        if ready is None and entry.try_lock():
            return self._produce(entry, member.size, blob, chunks, upload)
        read = _drain(chunks)
        ready = ready or entry.wait()
        if ready is not None and ready.source_digest == read:
            sent = _send_spooled(ready, upload, cancel)
            if sent is not None:
                with self._room:
                    self.reused += 1
                return Sent(sent, ready.blob_digest, read)
        again = stream()  # nothing trustworthy spooled: compress it here after all
        sent = upload(again.pieces(read_again(member)), None)
        return Sent(sent, again.blob_digest(), again.source_digest())

    def _produce(self, entry: "SpoolEntry", estimate: int, blob: BlobStream, chunks: Iterator[bytes],
                 upload: Upload) -> Sent:
        """Compress and upload the layer, writing it to the spool on the way; the lock goes once it is written."""
        out = entry.writer() if self.reserve(estimate) else None
        if out is None:
            entry.unlock()

        def teed() -> Iterator[bytes]:
            for piece in blob.pieces(chunks):
                if out is not None:
                    out.write(piece)
                yield piece
            if out is not None:
                entry.publish(out, blob.source_digest(), blob.blob_digest())

        pieces = teed()
        try:
            sent = upload(pieces, None)
        finally:
            try:
                pieces.close()
            except ValueError:  # pragma: no cover - still running in a producer thread that did not stop in time
                pass
            entry.discard(out)
            entry.unlock()
        return Sent(sent, blob.blob_digest(), blob.source_digest())


def _drain(chunks: Iterator[bytes]) -> str:
    """Read this push's copy of a layer through, hashing it, without sending it: the digest of its bytes."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _send_spooled(ready: SpooledBlob, upload: Upload, cancel: Callable[[object], None]) -> object | None:
    """Upload a spooled blob; None (the session cancelled) when its bytes do not hash to the digest it claims."""
    digest = hashlib.sha256()

    def pieces(hashing: bool) -> Iterator[bytes]:
        with open(ready.path, "rb") as handle:
            for piece in iter(lambda: handle.read(READ_SIZE), b""):
                if hashing:
                    digest.update(piece)
                yield piece

    sent = upload(pieces(True), lambda: pieces(False))
    if "sha256:" + digest.hexdigest() != ready.blob_digest:
        cancel(sent)
        return None
    return sent


class SpoolEntry:
    """One layer's files in the spool: `<key>.lock`, `<key>.blob` with `<key>.json`, and temporary `.part` files."""

    def __init__(self, session: SpoolSession, base: str) -> None:
        self.session, self.base = session, base
        self.blob_path, self.facts_path = base + ".blob", base + ".json"
        self._descriptor: int | None = None

    def ready(self) -> SpooledBlob | None:
        """The complete spooled blob, or None (not written yet, or left incomplete)."""
        try:
            with open(self.facts_path, encoding="utf-8") as handle:
                facts = json.load(handle)
            if os.path.getsize(self.blob_path) != facts["size"]:
                return None
            return SpooledBlob(self.blob_path, facts["source_digest"], facts["blob_digest"], facts["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def try_lock(self) -> bool:
        """Take the layer's lock if nobody holds it; then, if it is still not spooled, this push writes it."""
        descriptor = os.open(self.base + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._descriptor = descriptor
        if self.ready() is not None:
            self.unlock()
            return False
        return True

    def unlock(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def wait(self) -> SpooledBlob | None:
        """Wait until the push writing this layer lets go of it; the blob it spooled, if it did."""
        with _flock(self.base + ".lock"):
            return self.ready()

    def writer(self) -> IO[bytes]:
        """A new temporary file (0600) for the blob being written; the caller closes it (`discard`)."""
        path = f"{self.base}.{os.getpid()}.{secrets.token_hex(4)}.part"
        return open(path, "xb", opener=lambda name, flags: os.open(name, flags, 0o600))  # pylint: disable=R1732

    def publish(self, out: IO[bytes], source_digest: str, blob_digest: str) -> None:
        """Make the written blob visible: file renamed first, then its facts (so facts always name a whole file)."""
        out.flush()
        size = out.tell()
        os.replace(out.name, self.blob_path)
        facts = {"source_digest": source_digest, "blob_digest": blob_digest, "size": size}
        temporary = f"{self.facts_path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(facts, handle)
        os.replace(temporary, self.facts_path)
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


def default_spool_dir() -> str:
    """The spool root used unless the caller names one: beside the push cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "datarobot_mlops", "spool")
