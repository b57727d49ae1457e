from __future__ import annotations

import gzip
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    COMPRESS_BLOCK,
    BlobStream,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Layer, Member


def layer(compressed: bool = False) -> Layer:
    return Layer(Member("blobs/x", 0, 0, b""), diff_id="sha256:unused", compressed=compressed)


def blob(data: bytes, compression: Compression, pool=None, pieces: int = 7) -> tuple[bytes, BlobStream]:
    stream = BlobStream(layer(), compression, pool)
    step = max(1, len(data) // pieces)
    out = b"".join(stream.pieces(iter([data[i:i + step] for i in range(0, len(data), step)])))
    return out, stream


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
