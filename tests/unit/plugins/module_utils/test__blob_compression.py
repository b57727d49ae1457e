from __future__ import annotations

import gzip
import hashlib
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import nullcontext

import pytest
from isal import isal_zlib  # pinned in requirements-test.txt: a missing isal must fail, not skip

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    BLOCK_ATTEMPTS,
    COMPRESS_BLOCK,
    BlobChanged,
    BlobStream,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Layer, Member


def layer(compressed: bool = False) -> Layer:
    return Layer(Member("blobs/x", 0, 0, b""), diff_id="sha256:unused", compressed=compressed)


def blob(data: bytes, compression: Compression, pool=None, pieces: int = 7) -> tuple[bytes, BlobStream]:
    stream = BlobStream(layer(), compression, pool)
    return b"".join(stream.pieces(_chunks(data, pieces))), stream


def _chunks(data: bytes, pieces: int = 5):
    """`data` in about `pieces` pieces, as an archive read hands them over."""
    step = max(1, len(data) // pieces)
    return iter([data[i:i + step] for i in range(0, len(data), step)])


DATA = os.urandom(COMPRESS_BLOCK // 2) + b"\0" * (2 * COMPRESS_BLOCK + 12345)


def test_same_bytes_give_the_same_blob_digest_however_they_arrive():
    serial, first = blob(DATA, Compression(), pieces=3)
    with ThreadPoolExecutor(4) as pool:
        parallel, second = blob(DATA, Compression(), pool, pieces=11)
    assert serial == parallel
    assert first.blob_digest() == second.blob_digest() == "sha256:" + hashlib.sha256(serial).hexdigest()


def test_the_blob_is_a_gzip_stream_of_the_layer_and_the_source_digest_is_the_layers():
    out, stream = blob(DATA, Compression(level=6))
    assert gzip.decompress(out) == DATA
    assert stream.source_digest() == "sha256:" + hashlib.sha256(DATA).hexdigest()
    assert stream.blob_digest() != stream.source_digest()


def test_no_compression_and_already_compressed_layers_pass_through():
    out, stream = blob(DATA, Compression("none"))
    assert out == DATA and stream.blob_digest() == stream.source_digest()
    kept = BlobStream(layer(compressed=True), Compression())
    assert b"".join(kept.pieces(iter([b"ab", b"c"]))) == b"abc"


def test_the_key_names_the_compressor_so_cached_digests_never_mix():
    assert Compression("none").key == "none"
    assert Compression(level=1).key != Compression(level=6).key
    assert str(COMPRESS_BLOCK) in Compression().key


@pytest.mark.parametrize("level", [-5, -1, 10, 99])
def test_a_level_gzip_has_not_is_refused_up_front_naming_the_valid_ones(level):
    """Not later in a compressing thread, where the compressor's own error (isal's IsalError, zlib.error) is no
    OSError or MlopsError and ended the module in a traceback."""
    with pytest.raises(MlopsError, match=rf"compression_level {level} is no gzip level: give 0 \(no compression\) to "
                                         r"9 \(smallest\)"):
        Compression("gzip", level)


@pytest.mark.parametrize("level", [0, 9])
def test_the_lowest_and_highest_gzip_levels_compress(level):
    assert gzip.decompress(Compression("gzip", level).compress(DATA)) == DATA


def _mixed_layer() -> bytes:
    """Text, random bytes and zeros, cut at no block boundary: what a real layer tar looks like to the compressor."""
    rng = random.Random(17)
    parts = []
    for index in range(300):
        kind = index % 3
        size = rng.randrange(1, 64 * 1024)
        parts.append(rng.randbytes(size) if kind == 0 else b"\0" * size if kind == 1 else
                     b"".join(b"line %d of a config file\n" % rng.randrange(10**6) for _line in range(size // 24)))
    return b"".join(parts)


LAYER = _mixed_layer()


def _digests(data: bytes, level: int, pieces: int) -> tuple[str, int]:
    with ThreadPoolExecutor(2) as pool:
        out, stream = blob(data, Compression(level=level), pool, pieces=pieces)
    return stream.blob_digest(), len(out)


@pytest.mark.parametrize("level", [1, 3])
def test_the_same_layer_compressed_many_times_at_once_gives_one_digest(level):
    """Threads and processes side by side, bytes arriving in pieces of every size: one blob digest and size, or the
    registries of a fleet (and the push cache's "nothing changed") would see different blobs for one layer."""
    runs = [(LAYER, level, pieces) for pieces in (1, 3, 7, 1000)] * 2
    with ThreadPoolExecutor(len(runs)) as threads:
        in_threads = list(threads.map(lambda args: _digests(*args), runs))
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as processes:
        in_processes = list(processes.map(_digests, *zip(*runs[:4])))
    assert len(set(in_threads + in_processes)) == 1, set(in_threads + in_processes)
    assert len(LAYER) % COMPRESS_BLOCK  # the last block is a short one


def test_isal_output_depends_on_how_its_input_is_split_so_each_block_is_compressed_in_one_call():
    """The condition under which isal is not deterministic: the same bytes fed to one compressor in pieces of other
    sizes give other bytes (zlib's do not). A block is always compressed whole, so arrival never matters."""

    def fed(pieces: int) -> bytes:
        compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        step = len(LAYER) // pieces
        return b"".join(compressor.compress(LAYER[i:i + step]) for i in range(0, len(LAYER), step)) + \
            compressor.flush()

    assert len({fed(pieces) for pieces in (1, 50, 700)}) > 1
    assert gzip.decompress(fed(50)) == LAYER
    blocks = [LAYER[i:i + COMPRESS_BLOCK] for i in range(0, len(LAYER), COMPRESS_BLOCK)]
    whole = b"".join(_one_call(block) for block in blocks)
    assert all(blob(LAYER, Compression(), pieces=pieces)[0] == whole for pieces in (1, 50, 700))


def _one_call(block: bytes) -> bytes:
    return Compression().compress(block)


def test_with_isal_a_block_is_isals_one_shot_gzip_member_and_the_key_says_so():
    """The one-shot call, not the streaming compressor (which now and then gave other bytes for the same block
    under load): another compressor is another cache key, so no layer digest of the old one is reused."""
    block = LAYER[:COMPRESS_BLOCK]
    assert Compression().compress(block) == isal_zlib.compress(block, 1, 31)
    assert gzip.decompress(Compression().compress(block)) == block
    assert Compression().key == f"isal-1-blocks{COMPRESS_BLOCK}-whole"


# --- compressing a blob again, to resend what a registry lost --------------------------------------------------------

class Wavering(Compression):
    """A compressor that gives other bytes (a valid gzip member of the same block) on the calls it is told: what
    isal now and then does, which cannot be made to happen on demand."""

    def __init__(self, other_on: set[int]) -> None:
        super().__init__()
        self.calls, self.other_on = 0, other_on

    def compress(self, block: bytes) -> bytes:
        self.calls += 1
        if self.calls in self.other_on:
            return gzip.compress(block, compresslevel=9, mtime=0)
        return super().compress(block)


@pytest.mark.parametrize("threads", [0, 2])
def test_compressed_again_a_blob_gives_the_bytes_it_gave_before(threads):
    with ThreadPoolExecutor(threads) if threads else nullcontext() as pool:
        stream = BlobStream(layer(), Compression(), pool)
        first = b"".join(stream.pieces(_chunks(LAYER)))
        again = b"".join(stream.again(_chunks(LAYER, 13)))
    assert again == first
    assert stream.source_digest() == "sha256:" + hashlib.sha256(LAYER).hexdigest()  # again() leaves the digests be


def test_compressed_again_only_as_far_as_it_was_given_before():
    """Only what the first compression gave can be checked: a blob resent while it is still being compressed stops
    there (the registry held no more of it)."""
    stream = BlobStream(layer(), Compression())
    given = stream.pieces(_chunks(LAYER))
    first_two = next(given) + next(given)
    assert b"".join(stream.again(_chunks(LAYER))) == first_two


def test_a_block_that_comes_out_otherwise_when_compressed_again_is_compressed_once_more():
    blocks = -(-len(LAYER) // COMPRESS_BLOCK)
    wavering = Wavering({blocks + 2})  # the second block, compressed again
    stream = BlobStream(layer(), wavering)
    first = b"".join(stream.pieces(_chunks(LAYER)))
    assert b"".join(stream.again(_chunks(LAYER))) == first
    assert wavering.calls == 2 * blocks + 1


def test_a_blob_whose_first_compression_was_the_odd_one_cannot_be_resent_and_says_so():
    """The first compression gave the odd bytes, and the registry lost them: no compression gives them again. The
    error names the layer and what to do, before any byte that differs is given."""
    stream = BlobStream(layer(), Wavering({2}))
    first = b"".join(stream.pieces(_chunks(LAYER)))
    given = []
    with pytest.raises(BlobChanged, match=r"Layer blobs/x: .* other bytes at block 1 \(3 tries\).*run again") as raised:
        for piece in stream.again(_chunks(LAYER)):
            given.append(piece)
    assert BLOCK_ATTEMPTS == 3 and "Traceback" not in str(raised.value)
    assert b"".join(given) == first[:len(b"".join(given))] and len(given) == 1


def test_an_uncompressed_blob_again_is_the_layers_bytes_read_again():
    stream = BlobStream(layer(compressed=True), Compression())
    assert b"".join(stream.pieces(iter([b"ab", b"c"]))) == b"abc"
    assert b"".join(stream.again(iter([b"a", b"bc"]))) == b"abc"
