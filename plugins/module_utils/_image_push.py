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
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import (
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
    RegistryClient,
)

try:
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - zlib is the fallback
    _isal = None

CHUNK = 16 * 1024 * 1024  # per PATCH; also what a retry may resend
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
        return f"{'isal' if _isal else 'zlib'}-{self.level}"

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


def all_tags_at(client: RegistryClient, repository: Repository, tags: list[str], digest: str) -> bool:
    return all((found := client.manifest(repository.path, tag)) is not None and found[0] == digest
               for tag in tags[1:])


def default_cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "datarobot_mlops", "pps_image.json")


class DirectPusher:
    def __init__(self, client: RegistryClient, repository: Repository, tags: list[str], *,
                 compression: Compression = Compression(), workers: int = 4, manifest_format: str = "auto",
                 mount_from: list[str] | None = None,
                 cache: PushCache | None = None, check_mode: bool = False,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.client, self.repository, self.tags = client, repository, tags
        self.compression, self.workers, self.manifest_format = compression, max(1, workers), manifest_format
        self.cache = cache or PushCache(None)
        self.check_mode, self.on_progress = check_mode, on_progress
        self.mount_from = mount_from or []

    @property
    def _repo(self) -> str:
        return self.repository.path

    def push(self, archive_path: str, source_image: str | None = None) -> PushResult:
        started = time.monotonic()
        result = self._push(archive_path, source_image)
        result.elapsed = round(time.monotonic() - started, 3)
        self.cache.save()
        return result

    # --- deciding --------------------------------------------------------------------------------------------

    def _image(self) -> str:
        return f"{self.repository}:{self.tags[0]}"

    def _unchanged(self, before: str | None, live_config: str | None, config_digest: str,
                   blobs: int) -> PushResult | None:
        if before and live_config == config_digest and all_tags_at(self.client, self.repository, self.tags, before):
            return PushResult(self._image(), before, config_digest, False, before, blobs_skipped=blobs)
        return None

    def _push(self, archive_path: str, source_image: str | None) -> PushResult:
        before, live_config = tag_state(self.client, self.repository, self.tags[0])
        key = PushCache.archive_key(archive_path, source_image) if os.path.exists(archive_path) else None
        known = self.cache.data["archives"].get(key) if key else None
        if known:
            unchanged = self._unchanged(before, live_config, known["config_digest"], known["blobs"])
            if unchanged:
                return unchanged
        archive = Archive.scan(archive_path)
        image = archive.select(source_image)
        if key:
            self.cache.data["archives"][key] = {"config_digest": image.config_digest, "blobs": len(image.layers) + 1}
        unchanged = self._unchanged(before, live_config, image.config_digest, len(image.layers) + 1)
        return unchanged or self._transfer(archive, image, before)

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

    # --- moving bytes ----------------------------------------------------------------------------------------

    def _transfer(self, archive: Archive, image: Image, before: str | None) -> PushResult:
        result = PushResult(self._image(), "", image.config_digest, True, before)
        unique: dict[str, Layer] = {}
        for layer in image.layers:
            unique.setdefault(layer.diff_id, layer)
        outcome: dict[str, tuple[str, int]] = {}  # diff_id -> (blob digest, size)
        pending: list[Layer] = []
        for diff_id, layer in unique.items():
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
        config_present = self.client.blob_size(self._repo, image.config_digest) is not None
        if self.check_mode:
            result.would_upload = [layer.member.name for layer in pending]
            if not config_present:
                result.would_upload.append("config " + image.config_digest)
            result.blobs_skipped += int(config_present)
            digests = self._digests_only(archive, pending)
            outcome.update(digests)
            result.digest = self._manifest(image, outcome)[2]
            return result
        uploaded = self._upload_layers(archive, pending)
        for diff_id, (digest, size) in uploaded.items():
            outcome[diff_id] = (digest, size)
            self.cache.remember_blob(self.client.registry, self._repo, digest)
        result.blobs_uploaded += len(uploaded)
        result.bytes_uploaded += sum(size for _digest, size in uploaded.values())
        if config_present:
            result.blobs_skipped += 1
        else:
            config_digest = "sha256:" + hashlib.sha256(image.config).hexdigest()
            self.client.upload(self._repo, [image.config], lambda: config_digest)
            result.blobs_uploaded += 1
            result.bytes_uploaded += len(image.config)
        body, media_type, digest = self._manifest(image, outcome)
        for tag in self.tags:  # last: only now does any tag move
            self.client.put_manifest(self._repo, tag, body, media_type)
        result.digest = digest
        return result

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

    def _digests_only(self, archive: Archive, layers: list[Layer]) -> dict[str, tuple[str, int]]:
        """Check mode: what the pending layers' blobs would be, computed without sending anything."""
        found: dict[str, tuple[str, int]] = {}

        def measure(layer: Layer, chunks: Iterator[bytes]) -> None:
            blob = _BlobStream(layer, self.compression)
            size = 0
            for piece in blob.pieces(chunks):
                size += len(piece)
            found[layer.diff_id] = (blob.digest(), size)

        self._run_per_layer(archive, layers, measure)
        return found

    def _upload_layers(self, archive: Archive, layers: list[Layer]) -> dict[str, tuple[str, int]]:
        done: dict[str, tuple[str, int]] = {}

        def upload(layer: Layer, chunks: Iterator[bytes]) -> None:
            blob = _BlobStream(layer, self.compression)
            sent = self.client.upload(self._repo, _rechunk(blob.pieces(chunks), CHUNK), blob.digest,
                                      self.on_progress)
            done[layer.diff_id] = (sent.digest, sent.size)
            if not layer.compressed and self.compression.kind == "gzip":
                self.cache.remember_layer(layer.diff_id, self.compression.key, sent.digest, sent.size)

        self._run_per_layer(archive, layers, upload)
        return done

    def _run_per_layer(self, archive: Archive, layers: list[Layer],
                       work: Callable[[Layer, Iterator[bytes]], None]) -> None:
        """Run `work` for each layer in parallel threads, feeding it the layer's bytes.

        Plain tar: every thread reads its own member at its offset. Gzip: one reader decompresses the
        archive in order and hands each layer's bytes to its thread through a small bounded queue.
        """
        if not layers:
            return
        by_member = {layer.member.name: layer for layer in layers}
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="layer") as pool:
            futures: list[Future] = []
            if not archive.gzipped:
                for layer in layers:
                    futures.append(pool.submit(_from_file, archive, layer.member, work, layer))
            else:
                failed = threading.Event()

                def feed(member: Member, reader: IO[bytes]) -> None:
                    pipe: queue.Queue = queue.Queue(QUEUE_CHUNKS)
                    futures.append(pool.submit(_guarded, work, by_member[member.name], _drain(pipe), failed))
                    while True:
                        data = reader.read(READ)
                        if not _put(pipe, data, failed):
                            raise _Aborted()
                        if not data:
                            break

                try:
                    archive.stream(set(by_member), feed)
                except _Aborted:
                    pass  # a layer's thread failed: its error is raised below
            for future in futures:
                future.result()


def _from_file(archive: Archive, member: Member, work: Callable[[Layer, Iterator[bytes]], None],
               layer: Layer) -> None:
    with archive.open_member(member) as reader:
        work(layer, iter(lambda: reader.read(READ), b""))


def _guarded(work: Callable[[Layer, Iterator[bytes]], None], layer: Layer, chunks: Iterator[bytes],
             failed: threading.Event) -> None:
    try:
        work(layer, chunks)
    except BaseException:
        failed.set()  # stop the reader feeding a layer nobody consumes
        raise


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


def _drain(pipe: queue.Queue) -> Iterator[bytes]:
    while True:
        data = pipe.get()
        if not data:
            return
        yield data


def _rechunk(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class _BlobStream:
    """A layer's bytes on their way to the registry: compressed when asked, hashed, verified at the end."""

    def __init__(self, layer: Layer, compression: Compression) -> None:
        self.layer = layer
        self.compress = not layer.compressed and compression.kind == "gzip"
        self._compressor = compression.compressor() if self.compress else None
        self._source_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()

    def pieces(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._source_hash.update(chunk)
            out = self._compressor.compress(chunk) if self._compressor else chunk
            if out:
                self._blob_hash.update(out)
                yield out
        if self._compressor:
            tail = self._compressor.flush()
            self._blob_hash.update(tail)
            yield tail

    def digest(self) -> str:
        """The blob's digest, after checking the layer is what the archive says it is."""
        source = "sha256:" + self._source_hash.hexdigest()
        expected = self.layer.digest if self.layer.compressed else self.layer.diff_id
        if source != expected:
            raise ArchiveError(f"layer {self.layer.member.name} does not match its digest {expected} (its content "
                               f"hashes to {source}): the archive is corrupt; nothing was tagged.")
        return "sha256:" + self._blob_hash.hexdigest()
