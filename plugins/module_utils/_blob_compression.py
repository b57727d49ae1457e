# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Deterministic parallel gzip for layers, and the digests before and after it.

A registry names a blob by its digest, so a layer compressed twice must give the same bytes twice, or every
run would upload it again. Fixed-size blocks, each its own gzip member with no timestamp, give that, and let
the blocks be compressed in parallel threads. isal, rarely, still gives a block other bytes (docs/pps_image.md):
where the same bytes matter within a run (resending what a registry lost), BlobStream.again() checks them.
"""

from __future__ import annotations

import hashlib
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Layer
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_pipeline import (
    ordered,
    rechunk,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_stats import Phases

try:
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - zlib is the fallback
    _isal = None

COMPRESS_BLOCK = 2 * 1024 * 1024  # gzip member size: fixed, so the same layer always gives the same digest
IN_FLIGHT = 4  # blocks being compressed per layer
BLOCK_ATTEMPTS = 3  # compressions of one block, when compressing a blob again, before its other bytes are an error


class BlobChanged(MlopsError):
    """A blob compressed again came out as other bytes than the first time, so it cannot resume an upload."""


class CompressionOptionError(MlopsError):
    """A compression option the compressors cannot take; the message names the values they can."""


@dataclass
class Compression:
    """How uncompressed layers are stored: `kind` gzip or none, and the gzip level."""

    kind: str = "gzip"  # gzip | none
    level: int = 1

    def __post_init__(self) -> None:
        """Refuse a level gzip has not now: later, in a compressing thread, isal's IsalError or zlib.error (neither
        an OSError nor an MlopsError) would end the module in a traceback."""
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not 0 <= self.level <= 9:
            raise CompressionOptionError(
                f"compression_level {self.level} is no gzip level: give 0 (no compression) to 9 (smallest); 1, the "
                "default, is the fastest that compresses (with isal installed, levels above 3 compress as 3).")

    @property
    def key(self) -> str:
        """Names the exact compressor: the same bytes in give the same digest out only for the same one."""
        if self.kind == "none":
            return "none"
        # "-whole": isal's one-shot compress (other bytes than its streaming compressor gave before 2026-11-27)
        return f"isal-{self.level}-blocks{COMPRESS_BLOCK}-whole" if _isal else f"zlib-{self.level}-blocks{COMPRESS_BLOCK}"

    def compress(self, block: bytes) -> bytes:
        """One whole block as one gzip member (wbits 31: gzip framing, mtime 0, no name), in one call."""
        if _isal is not None:
            return _isal.compress(block, min(self.level, 3), 31)
        compressor = zlib.compressobj(self.level, zlib.DEFLATED, 31)
        return compressor.compress(block) + compressor.flush()


class BlobStream:
    """A layer's bytes on their way to the registry: compressed when asked, and hashed before and after.

    Compression runs in parallel inside one layer, pigz-style: the layer is cut into fixed blocks, each
    compressed on its own into a complete gzip member, and the members joined in order. A multi-member gzip is
    a valid gzip stream (RFC 1952) that every runtime reads; fixed blocks keep the output, and so the digest,
    the same on every run.
    """

    def __init__(self, layer: Layer, compression: Compression, pool: ThreadPoolExecutor | None = None,
                 phases: Phases | None = None) -> None:
        self.layer = layer
        self.compression = compression
        self.compress = not layer.compressed and compression.kind == "gzip"
        self.pool = pool
        self.phases = phases or Phases()
        self._source_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256() if self.compress else self._source_hash
        # The blob's digest so far after each compressed block: what compressing it again must match (again()).
        self._marks: list[bytes] = []

    def _gzip_block(self, block: bytes) -> bytes:
        # One call per whole block, always: isal's output (unlike zlib's) depends on how its input is split between
        # compress() calls, so bytes fed as they arrive would give another blob, and another digest, for the same
        # layer. With isal, the one-shot compress(): its streaming compressobj() now and then (in about one run in
        # three of four processes compressing side by side) gave one 2 MiB block 1 or 2 bytes otherwise, from the
        # same bytes; the one-shot call did not in 10 such runs, at the same speed and size.
        with self.phases.timed("compress", len(block)):
            return self.compression.compress(block)

    def _blocks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for block in rechunk(chunks, COMPRESS_BLOCK):
            with self.phases.timed("hash_layer", len(block)):
                self._source_hash.update(block)
            yield block

    def pieces(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The blob's bytes, in order, for the layer's bytes `chunks`; hashes both as they pass."""
        if not self.compress:
            for chunk in chunks:
                with self.phases.timed("hash_layer", len(chunk)):
                    self._source_hash.update(chunk)
                yield chunk
            return
        if self.pool is None:
            outputs: Iterator[bytes] = map(self._gzip_block, self._blocks(chunks))
        else:
            outputs = ordered(self.pool, self._gzip_block, self._blocks(chunks), IN_FLIGHT)
        for out in outputs:
            with self.phases.timed("hash_blob", len(out)):
                self._blob_hash.update(out)
                self._marks.append(self._blob_hash.copy().digest())
            yield out

    def again(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The bytes `pieces()` gave, once more, from the layer's bytes `chunks` read again (to resend what a
        registry lost).

        isal, now and then, compresses a block to other bytes (docs/pps_image.md), so each block is checked against
        the digest `pieces()` reached there, and compressed again when it differs; a block that keeps differing
        raises BlobChanged. Only the blocks `pieces()` has given can be checked, so only those are given.
        """
        if not self.compress:
            yield from chunks  # the archive's own bytes: read again, they are the same
            return
        digest = hashlib.sha256()
        blocks = rechunk(chunks, COMPRESS_BLOCK)
        outputs: Iterator[tuple[bytes, bytes]]
        if self.pool is None:
            outputs = map(self._gzip_pair, blocks)
        else:
            outputs = ordered(self.pool, self._gzip_pair, blocks, IN_FLIGHT)
        for index, (block, out) in enumerate(outputs):
            if index >= len(self._marks):
                return
            for attempt in range(1, BLOCK_ATTEMPTS + 1):
                tried = digest.copy()
                tried.update(out)
                if tried.digest() == self._marks[index]:
                    break
                if attempt == BLOCK_ATTEMPTS:
                    raise BlobChanged(
                        f"Layer {self.layer.member.name}: the registry lost its upload session, and compressing the "
                        f"layer again gave other bytes at block {index} ({BLOCK_ATTEMPTS} tries) than the first "
                        "time, so the upload cannot resume. The compressor (isal) does this now and then; nothing "
                        "of this layer was stored: run again.")
                out = self._gzip_block(block)
            digest = tried
            yield out

    def _gzip_pair(self, block: bytes) -> tuple[bytes, bytes]:
        return block, self._gzip_block(block)

    def source_digest(self) -> str:
        """Digest of the bytes read from the archive (checked against the archive's own digest)."""
        return "sha256:" + self._source_hash.hexdigest()

    def blob_digest(self) -> str:
        """Digest of the bytes sent: the blob's name in the registry."""
        return "sha256:" + self._blob_hash.hexdigest()
