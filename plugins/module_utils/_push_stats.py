# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Where a push spends its time: cheap per-phase counters that the push threads add to.

Each phase (reading the archive, decompressing it, hashing, compressing, uploading) sums the CPU seconds of the
threads doing that work, their wall seconds, and the bytes that passed. Wall minus CPU in `upload` is the time
spent waiting on the registry. Counting costs two clock reads and a lock per chunk of a megabyte or more.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import IO, Iterator

PHASES = ("read", "decompress", "hash_layer", "compress", "hash_blob", "upload")


class Phases:
    """CPU seconds, wall seconds and bytes per phase, summed over the threads that did the work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, list[float]] = {name: [0.0, 0.0, 0] for name in PHASES}
        self.archive_bytes = 0  # bytes read from the archive file (compressed bytes for a .tar.gz)

    def count_archive(self, count: int) -> None:
        """Count `count` bytes read from the archive file."""
        with self._lock:
            self.archive_bytes += count

    def add(self, phase: str, started: tuple[float, float], count: int) -> None:
        """Count `count` bytes of `phase` whose work began at `started` (a `clocks()` reading)."""
        wall, cpu = time.monotonic() - started[0], time.thread_time() - started[1]
        with self._lock:
            totals = self._totals.setdefault(phase, [0.0, 0.0, 0])
            totals[0] += cpu
            totals[1] += wall
            totals[2] += count

    @contextmanager
    def timed(self, phase: str, count: int = 0) -> Iterator[None]:
        """Count the block's work as `phase`, with `count` bytes."""
        started = clocks()
        try:
            yield
        finally:
            self.add(phase, started, count)

    def bytes(self, phase: str) -> int:
        """Bytes counted under `phase` so far."""
        with self._lock:
            return int(self._totals.get(phase, [0.0, 0.0, 0])[2])

    def report(self) -> dict[str, dict[str, float]]:
        """{phase: {"cpu": seconds, "wall": seconds, "bytes": count}} for the phases that saw work."""
        with self._lock:
            return {name: {"cpu": round(cpu, 3), "wall": round(wall, 3), "bytes": int(count)}
                    for name, (cpu, wall, count) in self._totals.items() if count or wall}


def clocks() -> tuple[float, float]:
    """(monotonic, this thread's CPU) seconds now: the start of a piece of work for `Phases.add`."""
    return time.monotonic(), time.thread_time()


class TimedReader:
    """A readable stream whose reads are counted as `phase` (e.g. decompressing the archive)."""

    def __init__(self, stream: IO[bytes], phases: Phases, phase: str) -> None:
        self._stream, self._phases, self._phase = stream, phases, phase

    def read(self, size: int = -1) -> bytes:
        started = clocks()
        data = self._stream.read(size)
        self._phases.add(self._phase, started, len(data))
        return data

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "TimedReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def timed_chunks(chunks: Iterator[bytes], phases: Phases, phase: str) -> Iterator[bytes]:
    """`chunks` as they are, counting what the consumer does with each one (e.g. upload it) as `phase`."""
    for chunk in chunks:
        started = clocks()
        yield chunk
        phases.add(phase, started, len(chunk))
