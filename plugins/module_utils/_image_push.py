# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Push an image archive straight to a registry, without a Docker daemon.

Order of work, so that a failed run never leaves a tag pointing at missing
blobs: decide from metadata what the registry lacks (HEAD, cross-repository
mount), stream only those layers out of the archive (compressing them in
parallel threads), verify each against its digest before committing it, and
put the manifest last. A small local cache remembers what earlier runs learnt
(which archive holds which image, which compressed digest a layer gets) so that
a repeated run decides "nothing to do" without reading the archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
from collections import deque
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator, TypeVar

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import (
    GZIP_MAGIC,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST_V2,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Archive,
    ArchiveError,
    Image,
    Layer,
    Member,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    OpenUpload,
    RegistryClient,
)

try:
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - zlib is the fallback
    _isal = None

CHUNK = 8 * 1024 * 1024  # per PATCH; also what a retry may resend
COMPRESS_BLOCK = 2 * 1024 * 1024  # gzip member size: fixed, so the same layer always gives the same digest
IN_FLIGHT = 4  # blocks being compressed per layer
T = TypeVar("T")
READ = 1024 * 1024
QUEUE_CHUNKS = 8  # per layer being fed from a gzip stream: bounds memory


@dataclass
class Compression:
    kind: str = "gzip"  # gzip | none
    level: int = 1

    @property
    def key(self) -> str:
        """Names the exact compressor: the same bytes in give the same digest out only for the same one."""
        if self.kind == "none":
            return "none"
        return f"{'isal' if _isal else 'zlib'}-{self.level}-blocks{COMPRESS_BLOCK}"

    def compressor(self) -> Any:
        if _isal is not None:
            return _isal.compressobj(min(self.level, 3), _isal.DEFLATED, 31)
        return zlib.compressobj(self.level, zlib.DEFLATED, 31)  # wbits 31: gzip framing, mtime 0, no name


@dataclass
class PushResult:
    image: str
    digest: str
    config_digest: str
    changed: bool
    before: str | None
    blobs_uploaded: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_uploaded: int = 0
    would_upload: list[str] = field(default_factory=list)
    elapsed: float = 0.0


class PushCache:
    """What earlier runs learnt, in one small JSON file; losing it only costs time."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {"archives": {}, "layers": {}, "blobs": {}}
        if path and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    self.data.update(json.load(handle))
            except (OSError, ValueError):
                pass  # a damaged cache is ignored and rewritten
        self._lock = threading.Lock()

    @staticmethod
    def archive_key(path: str, source_image: str | None) -> str:
        stat = os.stat(path)
        return f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{source_image or ''}"

    def remember_layer(self, diff_id: str, compression: str, digest: str, size: int) -> None:
        with self._lock:
            self.data["layers"][f"{diff_id}|{compression}"] = {"digest": digest, "size": size}

    def layer(self, diff_id: str, compression: str) -> dict[str, Any] | None:
        return self.data["layers"].get(f"{diff_id}|{compression}")

    def remember_blob(self, registry: str, repository: str, digest: str) -> None:
        with self._lock:
            places = self.data["blobs"].setdefault(f"{registry}|{digest}", [])
            if repository not in places:
                places.append(repository)
                del places[:-5]

    def blob_places(self, registry: str, digest: str) -> list[str]:
        return list(self.data["blobs"].get(f"{registry}|{digest}", []))

    def save(self) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle)
        os.replace(temporary, self.path)


def tag_state(client: RegistryClient, repository: Repository, tag: str) -> tuple[str | None, str | None]:
    """(manifest digest, config digest) the tag points at now; (None, None) when it does not exist."""
    found = client.manifest(repository.path, tag)
    if found is None:
        return None, None
    digest, body = found[0], found[2]
    try:
        config = json.loads(body).get("config", {}).get("digest")
    except ValueError:
        config = None
    return digest or "sha256:" + hashlib.sha256(body).hexdigest(), config


def already_pushed(client: RegistryClient, repository: Repository, tags: list[str], before: str | None,
                   live_config: str | None, config_digest: str, blobs: int) -> PushResult | None:
    """The no-op result when every tag already points at the image with this config, else None."""
    if not before or live_config != config_digest:
        return None
    if not all((found := client.manifest(repository.path, tag)) is not None and found[0] == before
               for tag in tags[1:]):
        return None
    return PushResult(f"{repository}:{tags[0]}", before, config_digest, False, before, blobs_skipped=blobs)


def default_cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "datarobot_mlops", "pps_image.json")


class DirectPusher:
    def __init__(self, client: RegistryClient, repository: Repository, tags: list[str], *,
                 compression: Compression = Compression(), workers: int | None = None, manifest_format: str = "auto",
                 mount_from: list[str] | None = None,
                 cache: PushCache | None = None, check_mode: bool = False,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.client, self.repository, self.tags = client, repository, tags
        # `workers` threads compress; layers are read half as many at a time (each layer's blocks are
        # compressed in parallel already, and more readers only cost memory).
        self.workers = max(1, workers or min(8, os.cpu_count() or 2))
        self.layer_readers = max(2, self.workers // 2)
        self.compression, self.manifest_format = compression, manifest_format
        self.cache = cache or PushCache(None)
        self.check_mode, self.on_progress = check_mode, on_progress
        self.mount_from = mount_from or []
        self._compressors: ThreadPoolExecutor | None = None

    @property
    def _repo(self) -> str:
        return self.repository.path

    def _image(self) -> str:
        return f"{self.repository}:{self.tags[0]}"

    def push(self, archive_path: str, source_image: str | None = None) -> PushResult:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="gzip") as self._compressors:
            result = self._push(archive_path, source_image)
        result.elapsed = round(time.monotonic() - started, 3)
        self.cache.save()
        return result

    # --- deciding --------------------------------------------------------------------------------------------

    def _unchanged(self, before: str | None, live_config: str | None, config_digest: str,
                   blobs: int) -> PushResult | None:
        return already_pushed(self.client, self.repository, self.tags, before, live_config, config_digest, blobs)

    def _push(self, archive_path: str, source_image: str | None) -> PushResult:
        before, live_config = tag_state(self.client, self.repository, self.tags[0])
        key = PushCache.archive_key(archive_path, source_image) if os.path.exists(archive_path) else None
        known = self.cache.data["archives"].get(key) if key else None
        if known:
            unchanged = self._unchanged(before, live_config, known["config_digest"], known["blobs"])
            if unchanged:
                return unchanged
        if before is None and not known and not self.check_mode and _is_gzip(archive_path):
            # A new tag and an archive never seen: no re-run, nothing to plan from; upload layers as the one read
            # of the archive passes them.
            return self._single_pass(archive_path, source_image, before, key)
        archive = Archive.scan(archive_path)
        image = archive.select(source_image)
        self._remember_archive(key, image)
        unchanged = self._unchanged(before, live_config, image.config_digest, len(image.layers) + 1)
        return unchanged or self._transfer(archive, image, before)

    def _remember_archive(self, key: str | None, image: Image) -> None:
        if key:
            self.cache.data["archives"][key] = {"config_digest": image.config_digest, "blobs": len(image.layers) + 1}

    def _target_digest(self, layer: Layer) -> str | None:
        if layer.compressed:
            return layer.digest
        if self.compression.kind == "none":
            return layer.diff_id
        cached = self.cache.layer(layer.diff_id, self.compression.key)
        return cached["digest"] if cached else None

    def _present(self, digest: str) -> tuple[bool, bool]:
        """(present, mounted): HEAD here, else try a mount from where earlier runs put it."""
        if self.client.blob_size(self._repo, digest) is not None:
            return True, False
        if self.check_mode:
            return False, False
        candidates = self.cache.blob_places(self.client.registry, digest) + self.mount_from
        for source in dict.fromkeys(candidates):
            if source != self._repo and self.client.mount(self._repo, digest, source):
                return True, True
        return False, False

    # --- two passes: decide from metadata, then send what is missing ------------------------------------------

    def _transfer(self, archive: Archive, image: Image, before: str | None) -> PushResult:
        result = PushResult(self._image(), "", image.config_digest, True, before)
        outcome: dict[str, tuple[str, int]] = {}  # diff_id -> (blob digest, size)
        pending: list[Layer] = []
        for diff_id, layer in _unique_layers(image).items():
            digest = self._target_digest(layer)
            if digest:
                present, mounted = self._present(digest)
                if present:
                    size = layer.member.size if (layer.compressed or self.compression.kind == "none") else \
                        self.cache.layer(diff_id, self.compression.key)["size"]
                    outcome[diff_id] = (digest, size)
                    result.blobs_skipped += 1
                    result.blobs_mounted += int(mounted)
                    continue
            pending.append(layer)
        if self.check_mode:
            result.would_upload = [layer.member.name for layer in pending]
            if self.client.blob_size(self._repo, image.config_digest) is None:
                result.would_upload.append("config " + image.config_digest)
            else:
                result.blobs_skipped += 1
            outcome.update(self._each_layer(archive, pending, self._measure))
            result.digest = self._manifest(image, outcome)[2]
            return result
        sent = self._each_layer(archive, pending, self._send)
        committed = {diff_id: self._commit(upload) for diff_id, upload in sent.items()}
        outcome.update(committed)
        result.blobs_uploaded += len(committed)
        result.bytes_uploaded += sum(size for _digest, size in committed.values())
        return self._finish(image, outcome, result)

    def _finish(self, image: Image, outcome: dict[str, tuple[str, int]], result: PushResult) -> PushResult:
        """Config blob, then the manifest under every tag: only now does any tag move."""
        if self.client.blob_size(self._repo, image.config_digest) is not None:
            result.blobs_skipped += 1
        else:
            self.client.upload(self._repo, [image.config], lambda: image.config_digest)
            result.blobs_uploaded += 1
            result.bytes_uploaded += len(image.config)
        body, media_type, digest = self._manifest(image, outcome)
        for tag in self.tags:
            self.client.put_manifest(self._repo, tag, body, media_type)
        result.digest = digest
        return result

    # --- one pass: a compressed archive is read once, layers sent as the scan reaches them --------------------

    def _single_pass(self, archive_path: str, source_image: str | None, before: str | None,
                     key: str | None) -> PushResult:
        """Stream every large member to an open upload session while indexing; commit what the image uses.

        Sessions stay uncommitted until the manifest and config have been read and every layer checked against
        its digest, so a corrupt archive leaves nothing stored; members that turn out not to be layers of the
        chosen image are cancelled.
        """
        feeder = _Feeder(self.layer_readers)
        streamed: dict[str, Future] = {}

        def on_large_member(member: Member, reader: IO[bytes]) -> None:
            layer = Layer(member, diff_id="", compressed=member.compressed)
            streamed[member.name] = feeder.submit(self._send_unverified, layer, reader)

        try:
            with feeder:
                archive = Archive.scan(archive_path, on_large_member=on_large_member)
            uploads = {name: future.result() for name, future in streamed.items()}
        except BaseException:
            for future in streamed.values():
                if future.done() and not future.exception():
                    self.client.cancel(future.result()[0])
            raise
        try:
            image = archive.select(source_image)
            self._remember_archive(key, image)
            result = PushResult(self._image(), "", image.config_digest, True, before)
            outcome: dict[str, tuple[str, int]] = {}
            used: set[str] = set()
            small: list[Layer] = []
            streamed_layers = []
            for layer in _unique_layers(image).values():
                if layer.member.name not in uploads:
                    small.append(layer)
                    continue
                _verify(layer, uploads[layer.member.name][2])  # every layer checked before any is committed
                streamed_layers.append(layer)
            for layer in streamed_layers:
                upload, blob_digest, _source = uploads[layer.member.name]
                used.add(layer.member.name)
                outcome[layer.diff_id] = self._commit((upload, blob_digest, layer))
                result.blobs_uploaded += 1
                result.bytes_uploaded += upload.size
            sent = self._each_layer(archive, small, self._send)
            for diff_id, upload in sent.items():
                outcome[diff_id] = self._commit(upload)
                result.blobs_uploaded += 1
                result.bytes_uploaded += upload[0].size
        finally:
            for name, (upload, _blob, _source) in uploads.items():
                if name not in used:
                    self.client.cancel(upload)
        return self._finish(image, outcome, result)

    # --- per-layer work ---------------------------------------------------------------------------------------

    def _send_unverified(self, layer: Layer, chunks: Iterator[bytes]) -> tuple[OpenUpload, str, str]:
        blob = _BlobStream(layer, self.compression, self._compressors)
        upload = self.client.send(self._repo, _rechunk(blob.pieces(chunks), CHUNK), self.on_progress)
        return upload, blob.blob_digest(), blob.source_digest()

    def _send(self, layer: Layer, chunks: Iterator[bytes]) -> tuple[OpenUpload, str, Layer]:
        upload, blob_digest, source_digest = self._send_unverified(layer, chunks)
        try:
            _verify(layer, source_digest)
        except ArchiveError:
            self.client.cancel(upload)
            raise
        return upload, blob_digest, layer

    def _commit(self, sent: tuple[OpenUpload, str, Layer]) -> tuple[str, int]:
        upload, blob_digest, layer = sent
        blob = self.client.commit(upload, blob_digest)
        self.cache.remember_blob(self.client.registry, self._repo, blob.digest)
        if not layer.compressed and self.compression.kind == "gzip":
            self.cache.remember_layer(layer.diff_id, self.compression.key, blob.digest, blob.size)
        return blob.digest, blob.size

    def _measure(self, layer: Layer, chunks: Iterator[bytes]) -> tuple[str, int]:
        """Check mode: the blob a layer would become, computed without sending anything."""
        blob = _BlobStream(layer, self.compression, self._compressors)
        size = sum(len(piece) for piece in blob.pieces(chunks))
        _verify(layer, blob.source_digest())
        return blob.blob_digest(), size

    def _each_layer(self, archive: Archive, layers: list[Layer], work: Callable[[Layer, Iterator[bytes]], T]) -> dict[str, T]:
        """Run `work` on each layer's bytes in parallel threads; results by diff_id.

        Plain tar: every thread reads its own member at its offset. Gzip: one reader decompresses the archive
        in order and hands each layer's bytes to its thread through a small bounded queue.
        """
        if not layers:
            return {}
        futures: dict[str, Future] = {}
        feeder = _Feeder(self.layer_readers)
        with feeder:
            # Small layers were kept in memory by the scan: no second read of the archive for them.
            kept = [layer for layer in layers if layer.member.name in archive.documents]
            for layer in kept:
                futures[layer.diff_id] = feeder.pool.submit(work, layer, iter([archive.documents[layer.member.name]]))
            layers = [layer for layer in layers if layer.member.name not in archive.documents]
            if not archive.gzipped:
                for layer in layers:
                    futures[layer.diff_id] = feeder.pool.submit(_from_file, archive, layer, work)
            elif layers:
                by_member = {layer.member.name: layer for layer in layers}

                def feed(member: Member, reader: IO[bytes]) -> None:
                    layer = by_member[member.name]
                    futures[layer.diff_id] = feeder.submit(work, layer, reader)

                archive.stream(set(by_member), feed)
        return {diff_id: future.result() for diff_id, future in futures.items()}

    def _manifest(self, image: Image, outcome: dict[str, tuple[str, int]]) -> tuple[bytes, str, str]:
        layers = []
        all_gzip = True
        for layer in image.layers:
            digest, size = outcome[layer.diff_id]
            if layer.compressed:
                media_type = layer.media_type or OCI_LAYER_GZIP
            else:
                media_type = OCI_LAYER if self.compression.kind == "none" else OCI_LAYER_GZIP
            all_gzip &= media_type.endswith("gzip")
            layers.append({"mediaType": media_type, "digest": digest, "size": size})
        docker = self.manifest_format == "docker" or (self.manifest_format == "auto" and all_gzip)
        if docker:
            if not all_gzip:
                raise ArchiveError("manifest_format docker needs gzip layers: use compression: gzip or "
                                   "manifest_format: oci.")
            for entry in layers:
                entry["mediaType"] = DOCKER_LAYER_GZIP
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_V2 if docker else OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": image.config_digest,
                       "size": len(image.config)},
            "layers": layers,
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        return body, manifest["mediaType"], "sha256:" + hashlib.sha256(body).hexdigest()


def _is_gzip(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == GZIP_MAGIC
    except OSError:
        return False


def _unique_layers(image: Image) -> dict[str, Layer]:
    """Each distinct layer once (images may repeat one, e.g. empty layers)."""
    unique: dict[str, Layer] = {}
    for layer in image.layers:
        unique.setdefault(layer.diff_id, layer)
    return unique


def _verify(layer: Layer, source_digest: str) -> None:
    expected = layer.digest if layer.compressed else layer.diff_id
    if source_digest != expected:
        raise ArchiveError(f"layer {layer.member.name} does not match its digest {expected} (its content hashes to "
                           f"{source_digest}): the archive is corrupt; nothing was tagged.")


class _Feeder:
    """A thread pool whose tasks read their input from bounded queues filled by the caller's thread.

    The caller (reading an archive in order) blocks when a queue is full, which bounds memory; when any task
    fails, feeding stops and the failure is raised.
    """

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer")
        self.failed = threading.Event()
        self.futures: list[Future] = []

    def submit(self, work: Callable[[Layer, Iterator[bytes]], T], layer: Layer, reader: IO[bytes]) -> Future:
        pipe: queue.Queue = queue.Queue(QUEUE_CHUNKS)
        future = self.pool.submit(self._guarded, work, layer, _drain(pipe, self.failed))
        self.futures.append(future)
        while True:
            data = reader.read(READ)
            if not _put(pipe, data, self.failed):
                raise _Aborted()
            if not data:
                return future

    def _guarded(self, work: Callable[[Layer, Iterator[bytes]], T], layer: Layer, chunks: Iterator[bytes]) -> T:
        try:
            return work(layer, chunks)
        except BaseException:
            self.failed.set()  # stop the reader feeding layers nobody will finish
            raise

    def __enter__(self) -> "_Feeder":
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is not None:
            self.failed.set()  # the reader failed (e.g. a truncated archive): tasks waiting for bytes give up
        self.pool.shutdown(wait=True)
        if kind is _Aborted:
            for future in self.futures:
                future.result()  # raises the task's own error instead of _Aborted
        return False


def _from_file(archive: Archive, layer: Layer, work: Callable[[Layer, Iterator[bytes]], T]) -> T:
    with archive.open_member(layer.member) as reader:
        return work(layer, iter(lambda: reader.read(READ), b""))


class _Aborted(Exception):
    pass


def _put(pipe: queue.Queue, data: bytes, failed: threading.Event) -> bool:
    """Hand bytes to a layer's thread; False once some layer's thread has failed."""
    while not failed.is_set():
        try:
            pipe.put(data, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


def _drain(pipe: queue.Queue, failed: threading.Event) -> Iterator[bytes]:
    while True:
        try:
            data = pipe.get(timeout=0.5)
        except queue.Empty:
            if failed.is_set():
                raise _Aborted()
            continue
        if not data:
            return
        yield data


def _rechunk(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Pieces of any size in, `size`-byte chunks out, copying each byte once."""
    held: list[bytes] = []
    count = 0
    for piece in pieces:
        if not piece:
            continue
        held.append(piece)
        count += len(piece)
        if count >= size:
            joined = b"".join(held)
            for start in range(0, len(joined) - size + 1, size):
                yield joined[start:start + size]
            rest = joined[len(joined) - len(joined) % size:]
            held, count = ([rest], len(rest)) if rest else ([], 0)
    if held:
        yield b"".join(held)


class _BlobStream:
    """A layer's bytes on their way to the registry: compressed when asked, and hashed before and after.

    Compression runs in parallel inside one layer, pigz-style: the layer is cut into fixed blocks, each
    compressed on its own into a complete gzip member, and the members joined in order. A multi-member gzip is
    a valid gzip stream (RFC 1952) that every runtime reads; fixed blocks keep the output, and so the digest,
    the same on every run.
    """

    def __init__(self, layer: Layer, compression: Compression, pool: ThreadPoolExecutor | None = None) -> None:
        self.layer = layer
        self.compression = compression
        self.compress = not layer.compressed and compression.kind == "gzip"
        self.pool = pool
        self._source_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256() if self.compress else self._source_hash

    def _gzip_block(self, block: bytes) -> bytes:
        compressor = self.compression.compressor()
        return compressor.compress(block) + compressor.flush()

    def _blocks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for block in _rechunk(chunks, COMPRESS_BLOCK):
            self._source_hash.update(block)
            yield block

    def pieces(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        if not self.compress:
            for chunk in chunks:
                self._source_hash.update(chunk)
                yield chunk
            return
        if self.pool is None:
            outputs: Iterator[bytes] = map(self._gzip_block, self._blocks(chunks))
        else:
            outputs = _ordered(self.pool, self._gzip_block, self._blocks(chunks), IN_FLIGHT)
        for out in outputs:
            self._blob_hash.update(out)
            yield out

    def source_digest(self) -> str:
        return "sha256:" + self._source_hash.hexdigest()

    def blob_digest(self) -> str:
        return "sha256:" + self._blob_hash.hexdigest()


def _ordered(pool: ThreadPoolExecutor, work: Callable[[bytes], bytes], items: Iterator[bytes],
             in_flight: int) -> Iterator[bytes]:
    """pool.map that keeps at most `in_flight` items in memory and yields results in input order."""
    window: deque[Future] = deque()
    for item in items:
        window.append(pool.submit(work, item))
        if len(window) >= in_flight:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()
