"""TarStream: the members of a tar stream with tarfile's own header parsing, their data read without copies."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._tar_stream import (
    TarStream,
    TarStreamError,
)


class Pieces(io.RawIOBase):
    """A stream that records the size of every read asked of it, and gives at most `most` bytes a read."""

    def __init__(self, data: bytes, most: int | None = None) -> None:
        self._data, self._most, self.position, self.asked = data, most, 0, []

    def read(self, size: int = -1) -> bytes:
        self.asked.append(size)
        size = len(self._data) if size is None or size < 0 else size
        size = min(size, self._most) if self._most else size
        data = self._data[self.position:self.position + size]
        self.position += len(data)
        return data


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def regular(name: str, data: bytes, **pax: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.pax_headers = dict(pax)
    return info, data


def link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, b""


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_every_member_and_its_bytes_as_tarfile_reads_them(fmt):
    long_name = "a/" + "long-directory-name/" * 8 + "layer.tar"  # 170 characters: a GNU or pax long name
    members = [regular("manifest.json", b"[]"), regular("x" * 10 + "/layer.tar", os.urandom(5_000_001)),
               link("y/layer.tar", "../x/layer.tar"), regular("empty", b"")]
    if fmt != tarfile.USTAR_FORMAT:
        members.append(regular(long_name, os.urandom(1_000)))
    data = tar_of(members, fmt)
    expected = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            expected.append((info.name, info.type, info.linkname, tar.extractfile(info).read() if info.isreg() else None))
    seen = []
    for info in (stream := TarStream(Pieces(data, most=777_777), piece=1 << 20)):
        reader = stream.extractfile(info)
        seen.append((info.name, info.type, info.linkname, b"".join(iter(lambda: reader.read(1 << 20), b""))
                     if reader else None))
    assert seen == expected


def test_a_member_read_in_pieces_is_read_in_exactly_those_pieces():
    """The point of it: a 2 MiB read of the member is one 2 MiB read of the stream below (no re-cutting)."""
    data = tar_of([regular("layer.tar", os.urandom(5 * 2**20))])
    below = Pieces(data)
    stream = TarStream(below, piece=2 * 2**20)
    info = next(iter(stream))
    reader = stream.extractfile(info)
    below.asked.clear()
    sizes = [len(piece) for piece in iter(lambda: reader.read(2 * 2**20), b"")]
    assert sizes == [2 * 2**20, 2 * 2**20, 2**20] and below.asked == sizes


def test_members_whose_data_is_left_unread_are_skipped():
    data = tar_of([regular("one", os.urandom(3 * 2**20 + 5)), regular("two", b"second")])
    stream = TarStream(Pieces(data), piece=2**20)
    names = []
    for info in stream:
        names.append(info.name)
        if info.name == "two":
            assert stream.extractfile(info).read() == b"second"
    assert names == ["one", "two"]


def test_a_stream_cut_inside_a_member_is_an_error():
    data = tar_of([regular("one", os.urandom(100_000)), regular("two", b"second")])
    stream = TarStream(Pieces(data[:50_000]), piece=2**20)
    with pytest.raises(TarStreamError, match="truncated"):
        for info in stream:
            reader = stream.extractfile(info)
            while reader.read(8192):
                pass


def test_garbage_instead_of_a_header_is_an_error():
    with pytest.raises(TarStreamError):
        list(TarStream(Pieces(b"not a tar header " * 64), piece=2**20))
    data = tar_of([regular("one", b"1")])
    with pytest.raises(TarStreamError, match="offset 1024"):
        list(TarStream(Pieces(data[:1024] + b"\x01" * 512), piece=2**20))


def test_an_empty_stream_has_no_members():
    assert list(TarStream(Pieces(b""), piece=2**20)) == []
