# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Small readers over an archive file: a head already read put back in front, and a file whose reads are counted."""

from __future__ import annotations

import io
from typing import IO, Callable


class Prefixed(io.RawIOBase):
    """Bytes already read (a member's head), then the rest of the stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data = self._head if size is None or size < 0 else self._head[:size]
            self._head = self._head[len(data):]
            if size is None or size < 0:
                return data + self._rest.read()
            # a full piece, so that later reads stay aligned to the reader's piece size
            return data + self._rest.read(size - len(data)) if size > len(data) else data
        return self._rest.read(size)


class Counted(io.RawIOBase):
    """The archive file, each read told to `on_read`."""

    def __init__(self, handle: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._handle, self._on_read = handle, on_read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._handle.seekable()

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._handle.readinto(buffer) or 0
        self._on_read(count)
        return count

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def close(self) -> None:
        self._handle.close()
        super().close()
