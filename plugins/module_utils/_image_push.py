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

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Callable, Iterable, Iterator, NamedTuple, TypeVar

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    BlobStream,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import BlobSpool
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._fleet_follow import FleetFollowing
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._follow_progress import LayerCredit
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import (
    GZIP_MAGIC,
    Archive,
    ArchiveError,
    Image,
    Layer,
    Member,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_cache import PushCache
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import PushProgress
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_pipeline import (
    CHUNK,
    Feeder,
    ahead,
    from_file,
    rechunk,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_result import (
    Manifest,
    PushResult,
    StoredBlob,
    already_pushed,
    build_manifest,
    tag_state,
    would_push,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_stats import (
    Phases,
    TimedReader,
    timed_chunks,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    OpenUpload,
    RegistryClient,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._spool_index import SpoolIndex

UPLOAD_AHEAD = 1  # chunks compressed ahead of the one being uploaded, per layer
T = TypeVar("T")


class OpenBlob(NamedTuple):
    """A layer sent to an upload session not yet committed, before its source digest has been checked."""

    upload: OpenUpload
    blob_digest: str
    source_digest: str


class CheckedBlob(NamedTuple):
    """A layer sent and checked against its digest: ready to commit."""

    upload: OpenUpload
    blob_digest: str
    layer: Layer


class Presence(NamedTuple):
    """Whether the target repository has a blob, and whether it got it by a mount just now."""

    present: bool
    mounted: bool


class DirectPusher(FleetFollowing):
    """Pushes one image of an archive to a registry over the distribution API, no daemon involved."""

    def __init__(self, client: RegistryClient, repository: Repository, tags: list[str], *,
                 compression: Compression = Compression(), workers: int | None = None, manifest_format: str = "auto",
                 mount_from: list[str] | None = None,
                 cache: PushCache | None = None, check_mode: bool = False,
                 on_progress: Callable[[int], None] | None = None, progress: PushProgress | None = None,
                 spool: BlobSpool | None = None) -> None:
        self.client, self.repository, self.tags = client, repository, tags
        # `workers` threads compress; layers are read half as many at a time (each layer's blocks are
        # compressed in parallel already, and more readers only cost memory).
        self.workers = max(1, workers or min(8, os.cpu_count() or 2))
        self.layer_readers = max(2, self.workers // 2)
        self.compression, self.manifest_format = compression, manifest_format
        self.cache = cache or PushCache(None)
        self.check_mode, self.progress = check_mode, progress or PushProgress(None)
        self.progress.on_sent = on_progress  # bytes sent, as they go (tools/pps_push.py's progress bar)
        self.mount_from = mount_from or []
        self._compressors: ThreadPoolExecutor | None = None
        self._source: Archive | None = None  # the archive being pushed, to read a layer again for a new session
        self.phases = Phases()  # where the time goes, reported with the result
        self.spool, self._spooling = spool, None  # layers compressed once for every push of the archive side by side
        self.warnings: list[str] = []  # what went wrong without failing the push, for the caller to pass on

    @property
    def _repo(self) -> str:
        return self.repository.path

    def _image(self) -> str:
        return f"{self.repository}:{self.tags[0]}"

    def push(self, archive_path: str, source_image: str | None = None) -> PushResult:
        """Put the image under every tag, sending only what the registry lacks; the manifest goes last."""
        started = time.monotonic()
        self._spooling = self.spool.join(archive_path, self.compression) if self.spool and not self.check_mode else None
        self._index = SpoolIndex(self._spooling) if self._spooling else None
        self._follow_progress = None  # set while this push follows another's index: credits per layer sent
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="gzip") as self._compressors:
                result = self._push(archive_path, source_image)
        finally:
            if self._index:
                self._index.release()
            if self._spooling:
                self._spooling.leave()
        result.blobs_from_spool = self._spooling.reused if self._spooling else 0
        result.archive_bytes_read = self.phases.archive_bytes
        result.elapsed = round(time.monotonic() - started, 3)
        result.bytes_compressed = self.phases.bytes("compress")
        result.phases = self.phases.report()
        if not self.check_mode:  # check mode changes nothing on this host either
            self._save_cache()
        self.progress.finish()
        return result

    def _save_cache(self) -> None:
        """The cache only saves later runs time: one that cannot be written is a warning, never a failed push (whatever
        the push did is done by now)."""
        try:
            self.cache.save()
        except OSError as exc:
            self.warnings.append(
                f"The push cache {self.cache.path} could not be written ({exc.strerror or exc}): the push itself is "
                "done, but the next run reads the archive again to decide what to send. Make that directory writable "
                "for this user (the default is under XDG_CACHE_HOME or ~/.cache), give another file as the module's "
                "cache option, or an empty cache to keep none.")

    # --- deciding --------------------------------------------------------------------------------------------

    def _unchanged(self, before: str | None, live_config: str | None, config_digest: str,
                   blobs: int) -> PushResult | None:
        return already_pushed(self.client, self.repository, self.tags, before, live_config, config_digest, blobs)

    def _push(self, archive_path: str, source_image: str | None) -> PushResult:
        self._source = Archive(archive_path, _is_gzip(archive_path), {}, {}, [], phases=self.phases)
        before, live_config = tag_state(self.client, self.repository, self.tags[0])
        key = PushCache.archive_key(archive_path, source_image) if os.path.exists(archive_path) else None
        known = self.cache.data["archives"].get(key) if key else None
        if known:
            unchanged = self._unchanged(before, live_config, known["config_digest"], known["blobs"])
            if unchanged:
                return unchanged
        if before is None and not known and not self.check_mode and _is_gzip(archive_path):
            # A new tag and an archive never seen: no re-run, nothing to plan from; upload layers as the one read
            # of the archive passes them (or, when another push of it is reading it, as that push spools them).
            followed = self._follow_index(archive_path) if self._index and not self._index.claim() else None
            return self._single_pass(archive_path, source_image, before, key, followed)
        self.progress.phase("indexing")
        archive = self._indexed_archive(archive_path)
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

    def _presence(self, digest: str) -> Presence:
        """HEAD here, else try a mount from where earlier runs put it; a refused mount only means "upload it"."""
        if self.client.blob_size(self._repo, digest) is not None:
            return Presence(True, False)
        candidates = self.cache.blob_places(self.client.registry, digest) + self.mount_from
        for source in dict.fromkeys(candidates):
            if source == self._repo:
                continue
            # Check mode only asks whether the source still has it: a mount would change the registry.
            if self.client.blob_size(source, digest) is not None if self.check_mode else \
                    self.client.mount(self._repo, digest, source):
                return Presence(True, True)
        return Presence(False, False)

    # --- two passes: decide from metadata, then send what is missing ------------------------------------------

    def _transfer(self, archive: Archive, image: Image, before: str | None) -> PushResult:
        result = PushResult(self._image(), "", image.config_digest, True, before)
        outcome: dict[str, StoredBlob] = {}  # by diff_id
        pending: list[Layer] = []
        for diff_id, layer in _unique_layers(image).items():
            known = self._known_blob(layer)
            if known:
                present, mounted = self._presence(known.digest)
                if present:
                    outcome[diff_id] = known
                    result.blobs_skipped += 1
                    result.blobs_mounted += int(mounted)
                    self.progress.blob(skipped=True, mounted=mounted, size=0 if archive.gzipped else layer.member.size)
                    continue
            pending.append(layer)
        self.progress.expect_blobs(len(outcome) + len(pending) + 1)
        archive.on_read = self.progress.read  # counted from here: the reads that send (or measure) layers
        self.progress.phase("sending")
        if self.check_mode:
            return self._would_push(image, outcome, pending, result)
        outcome.update(self._commit_all(list(self._each_layer(archive, pending, self._send).values()), result))
        return self._finish(image, outcome, result)

    def _finish(self, image: Image, outcome: dict[str, StoredBlob], result: PushResult) -> PushResult:
        """Config blob, then the manifest under every tag: only now does any tag move."""
        if self.client.blob_size(self._repo, image.config_digest) is not None:
            result.blobs_skipped += 1
            self.progress.blob(skipped=True)
        else:
            self.client.upload(self._repo, [image.config], lambda: image.config_digest, self.progress.sent)
            result.blobs_uploaded += 1
            result.bytes_uploaded += len(image.config)
            self.progress.blob()
        manifest = self._manifest(image, outcome)
        for tag in self.tags:
            self.client.put_manifest(self._repo, tag, manifest.body, manifest.media_type)
        result.digest = manifest.digest
        return result

    # --- one pass: a compressed archive is read once, layers sent as the scan reaches them --------------------

    def _single_pass(self, archive_path: str, source_image: str | None, before: str | None, key: str | None,
                     followed: tuple[Archive, dict[str, OpenBlob]] | None = None) -> PushResult:
        """Stream every large member to an open upload session while indexing; commit what the image uses.

        Sessions stay uncommitted until the manifest and config have been read and every layer checked against
        its digest, so a corrupt archive leaves nothing stored; members that turn out not to be layers of the
        chosen image are cancelled.
        """
        archive, uploads = followed or self._scan_sending(archive_path)
        used: set[str] = set()
        try:
            image = archive.select(source_image)
            self._remember_archive(key, image)
            result = PushResult(self._image(), "", image.config_digest, True, before)
            outcome = self._commit_streamed(archive, image, uploads, used, result)
        finally:
            for name, sent in uploads.items():
                if name not in used:
                    self.client.cancel(sent.upload)
        return self._finish(image, outcome, result)

    def _scan_sending(self, archive_path: str) -> tuple[Archive, dict[str, OpenBlob]]:
        """Index the archive, sending each large member to its own upload session as the scan passes it."""
        feeder = Feeder(self.layer_readers)
        streamed: dict[str, Future] = {}

        def on_large_member(member: Member, reader: IO[bytes]) -> None:
            layer = Layer(member, diff_id="", compressed=member.compressed)
            if self._index:
                self._index.announce(member)  # the pushes following this one start its upload from the spool
            streamed[member.name] = feeder.submit(self._send_unverified, layer,
                                                  TimedReader(reader, self.phases, "read"))

        try:
            with feeder:
                self.progress.phase("sending")
                archive = Archive.scan(archive_path, on_large_member=on_large_member, on_read=self.progress.read,
                                       phases=self.phases)
                if self._index:
                    self._index.publish(archive)
            return archive, {name: future.result() for name, future in streamed.items()}
        except BaseException:
            for future in streamed.values():
                if future.done() and not future.exception():
                    self.client.cancel(future.result().upload)
            raise

    def _commit_streamed(self, archive: Archive, image: Image, uploads: dict[str, OpenBlob], used: set[str],
                         result: PushResult) -> dict[str, StoredBlob]:
        """Check every layer (streamed ones, then any the scan did not stream), and only then commit them all."""
        checked: list[CheckedBlob] = []
        small: list[Layer] = []
        for layer in _unique_layers(image).values():
            sent = uploads.get(layer.member.name)
            if sent is None:
                small.append(layer)
                continue
            _verify(layer, sent.source_digest)  # every layer checked before any commit
            checked.append(CheckedBlob(sent.upload, sent.blob_digest, layer))
        checked += self._each_layer(archive, small, self._send).values()
        used.update(blob.layer.member.name for blob in checked)  # from here on _commit_all cancels what it must
        return self._commit_all(checked, result)

    def _commit_all(self, checked: list[CheckedBlob], result: PushResult) -> dict[str, StoredBlob]:
        """Commit checked layers, by diff_id; a failed commit cancels the sessions not committed yet."""
        outcome: dict[str, StoredBlob] = {}
        for index, blob in enumerate(checked):
            try:
                outcome[blob.layer.diff_id] = self._commit(blob)
            except BaseException:
                for rest in checked[index:]:
                    self.client.cancel(rest.upload)
                raise
            result.blobs_uploaded += 1
            result.bytes_uploaded += blob.upload.size
        return outcome

    # --- per-layer work ---------------------------------------------------------------------------------------

    def _send_unverified(self, layer: Layer, chunks: Iterator[bytes] | None) -> OpenBlob:
        """Compress and send a layer to a new upload session, left open (through the spool, when there is one).

        `chunks` None: this push reads no archive unless the spool has nothing for it (it follows another's index).
        """
        blob = BlobStream(layer, self.compression, self._compressors, self.phases)
        credit = self._follow_progress.layer(layer.member) if self._follow_progress else None
        if self._spooling and self._source and self._spooling.wants(blob):
            sent = self._spooling.send(
                blob, chunks, lambda: BlobStream(layer, self.compression, self._compressors, self.phases),
                self._source.read_again, lambda pieces, replay: self._upload(layer, pieces, replay, credit),
                self.client.cancel, credit.blob_size if credit else None)
            opened = OpenBlob(sent.upload, sent.blob_digest, sent.source_digest)
        else:
            if chunks is None:
                chunks = self._read_again(layer)
            upload = self._upload(layer, blob.pieces(chunks), lambda: blob.again(self._read_again(layer)), credit)
            opened = OpenBlob(upload, blob.blob_digest(), blob.source_digest())
        if credit:
            credit.done()
        self.progress.blob()
        return opened

    def _upload(self, layer: Layer, pieces: Iterator[bytes], replay: Callable[[], Iterator[bytes]],
                credit: LayerCredit | None = None) -> OpenUpload:
        """Send a blob's pieces to a new upload session; `replay()` gives them again.
        `credit`: the layer's share of the archive, for a push that follows another's (it reads no archive)."""
        # Compression runs ahead of the upload, so that the registry's work on one chunk overlaps ours on the next.
        produced = ahead(rechunk(pieces, CHUNK), UPLOAD_AHEAD)
        on_sent = self.progress.sent if credit is None else lambda count: (self.progress.sent(count), credit.sent(count))
        try:
            return self.client.send(self._repo, timed_chunks(produced, self.phases, "upload"), on_sent,
                                    replay=lambda: rechunk(replay(), CHUNK))
        finally:
            produced.close()  # a failed upload stops the compressing thread now, not when the error is collected

    def _read_again(self, layer: Layer) -> Iterator[bytes]:
        """The layer's bytes once more, from the archive file."""
        if self._source is None:
            raise ArchiveError("no archive to read the layer from")
        return self._source.read_again(layer.member)

    def _send(self, layer: Layer, chunks: Iterator[bytes] | None) -> CheckedBlob:
        """Send a layer whose digest is known, and check it; a mismatch cancels the session."""
        sent = self._send_unverified(layer, chunks)
        try:
            _verify(layer, sent.source_digest)
        except ArchiveError:
            self.client.cancel(sent.upload)
            raise
        return CheckedBlob(sent.upload, sent.blob_digest, layer)

    def _commit(self, checked: CheckedBlob) -> StoredBlob:
        """Store a checked layer under its digest, and remember where and what it became."""
        blob = self.client.commit(checked.upload, checked.blob_digest)
        self.cache.remember_blob(self.client.registry, self._repo, blob.digest)
        layer = checked.layer
        if not layer.compressed and self.compression.kind == "gzip":
            self.cache.remember_layer(layer.diff_id, self.compression.key, blob.digest, blob.size)
        return StoredBlob(blob.digest, blob.size)

    def _would_push(self, image: Image, outcome: dict[str, StoredBlob], pending: list[Layer],
                    result: PushResult) -> PushResult:
        """Check mode: what would be sent, from the archive's index alone; no layer is read or compressed.

        The manifest digest is predicted only when every blob's digest is known without compressing (the cache
        remembers what the layer became, the layer is stored compressed, or compression is none); else it is "".
        """
        result.would_upload = [layer.member.name for layer in pending]
        result.would_upload_bytes = sum(layer.member.size for layer in pending)
        if self.client.blob_size(self._repo, image.config_digest) is None:
            result.would_upload.append("config " + image.config_digest)
            result.would_upload_bytes += len(image.config)
        else:
            result.blobs_skipped += 1
        result.message = would_push(len(pending), result.would_upload_bytes,
                                    any(not layer.compressed for layer in pending) and self.compression.kind == "gzip")
        for layer in pending:
            known = self._known_blob(layer)
            if known is None:
                return result
            outcome[layer.diff_id] = known
        result.digest = self._manifest(image, outcome).digest
        return result

    def _known_blob(self, layer: Layer) -> StoredBlob | None:
        """The blob a layer becomes, when known without compressing it."""
        digest = self._target_digest(layer)
        if digest is None:
            return None
        if layer.compressed or self.compression.kind == "none":
            return StoredBlob(digest, layer.member.size)
        return StoredBlob(digest, self.cache.layer(layer.diff_id, self.compression.key)["size"])

    def _each_layer(self, archive: Archive, layers: list[Layer], work: Callable[[Layer, Iterator[bytes]], T]) -> dict[str, T]:
        """Run `work` on each layer's bytes in parallel threads; results by diff_id.

        Plain tar: every thread reads its own member at its offset. Gzip: one reader decompresses the archive
        in order and hands each layer's bytes to its thread through a small bounded queue.
        """
        if not layers:
            return {}
        futures: dict[str, Future] = {}
        try:
            self._start_each(archive, layers, work, futures)
            return {diff_id: future.result() for diff_id, future in futures.items()}
        except BaseException:
            self._cancel_sent(futures.values())  # the layers that did get through stay uncommitted: drop them
            raise

    def _cancel_sent(self, futures: Iterable[Future]) -> None:
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                upload = getattr(future.result(), "upload", None)
                if isinstance(upload, OpenUpload):
                    self.client.cancel(upload)

    def _start_each(self, archive: Archive, layers: list[Layer], work: Callable[[Layer, Iterator[bytes]], T],
                    futures: dict[str, Future]) -> None:
        feeder = Feeder(self.layer_readers)
        with feeder:
            # Small layers were kept in memory by the scan: no second read of the archive for them.
            kept = [layer for layer in layers if layer.member.name in archive.documents]
            for layer in kept:
                futures[layer.diff_id] = feeder.pool.submit(work, layer, iter([archive.documents[layer.member.name]]))
            layers = [layer for layer in layers if layer.member.name not in archive.documents]
            if self._followed:  # the index came from the spool: so do the layers, no read of the archive
                for layer in layers:
                    futures[layer.diff_id] = feeder.pool.submit(work, layer, None)
            elif not archive.gzipped:
                for layer in layers:
                    futures[layer.diff_id] = feeder.pool.submit(from_file, archive, layer, work)
            elif layers:
                by_member = {layer.member.name: layer for layer in layers}

                def feed(member: Member, reader: IO[bytes]) -> None:
                    layer = by_member[member.name]
                    futures[layer.diff_id] = feeder.submit(work, layer, TimedReader(reader, self.phases, "read"))

                archive.stream(set(by_member), feed)

    def _manifest(self, image: Image, outcome: dict[str, StoredBlob]) -> Manifest:
        return build_manifest(image, outcome, self.compression.kind, self.manifest_format)


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
