# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Moving layer bytes between threads with bounded memory.

An archive is read by one thread in order while each layer is compressed and sent by another; these helpers
keep that hand-over bounded (small queues), ordered (results in input order) and fail-fast (one failed layer
stops the reader), so the push code only says what to do with each layer.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Callable, Iterator, TypeVar

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import (
    READ_SIZE,
    Archive,
    Layer,
)

T = TypeVar("T")
CHUNK = 8 * 1024 * 1024  # bytes per PATCH of an upload; also what a retry may resend
QUEUE_CHUNKS = 4  # READ_SIZE pieces per layer being fed from a gzip stream: bounds memory (8 MiB a layer)

LayerWork = Callable[[Layer, Iterator[bytes]], T]


class Aborted(MlopsError):
    """Another layer's thread failed, so this one stopped; the first failure is what gets raised."""


class Feeder:
    """A thread pool whose tasks read their input from bounded queues filled by the caller's thread.

    The caller (reading an archive in order) blocks when a queue is full, which bounds memory; when any task
    fails, feeding stops and the failure is raised.
    """

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer")
        self.failed = threading.Event()
        self.futures: list[Future] = []

    def submit(self, work: LayerWork, layer: Layer, reader: IO[bytes]) -> Future:
        """Start `work` on `layer` in a thread and feed it everything `reader` holds."""
        pipe: queue.Queue = queue.Queue(QUEUE_CHUNKS)
        future = self.pool.submit(self._guarded, work, layer, drain(pipe, self.failed))
        self.futures.append(future)
        while True:
            data = reader.read(READ_SIZE)
            if not put(pipe, data, self.failed):
                raise Aborted()
            if not data:
                return future

    def _guarded(self, work: LayerWork, layer: Layer, chunks: Iterator[bytes]) -> T:
        try:
            return work(layer, chunks)
        except BaseException:
            self.failed.set()  # stop the reader feeding layers nobody will finish
            raise

    def __enter__(self) -> "Feeder":
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is not None:
            self.failed.set()  # the reader failed (e.g. a truncated archive): tasks waiting for bytes give up
        self.pool.shutdown(wait=True)
        if kind is Aborted:
            for future in self.futures:
                future.result()  # raises the task's own error instead of Aborted
        return False


def from_file(archive: Archive, layer: Layer, work: LayerWork) -> T:
    """Run `work` on a member of a plain tar, read at its own offset (no other reader involved)."""
    with archive.open_member(layer.member) as reader:
        return work(layer, iter(lambda: reader.read(READ_SIZE), b""))


def put(pipe: queue.Queue, data: bytes, failed: threading.Event) -> bool:
    """Hand bytes to a layer's thread; False once some layer's thread has failed."""
    while not failed.is_set():
        try:
            pipe.put(data, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


def drain(pipe: queue.Queue, failed: threading.Event) -> Iterator[bytes]:
    """The bytes `put` into `pipe` until an empty piece ends them; gives up once another layer failed."""
    while True:
        try:
            data = pipe.get(timeout=0.5)
        except queue.Empty:
            if failed.is_set():
                raise Aborted()
            continue
        if not data:
            return
        yield data


def rechunk(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Pieces of any size in, `size`-byte chunks out (the last may be shorter), copying each byte at most once.

    A piece that is a whole chunk by itself, with nothing held before it, passes as it is (a follower's reads of
    the spool are whole chunks); the rest is cut by views and joined once into each chunk.
    """
    held: list[bytes | memoryview] = []
    count = 0
    for piece in pieces:
        length = len(piece)
        if length == size and not held:
            yield piece
            continue
        start = 0
        while start < length:
            take = min(size - count, length - start)
            held.append(piece if take == length else memoryview(piece)[start:start + take])
            count += take
            start += take
            if count == size:
                yield b"".join(held)
                held, count = [], 0
    if held:
        yield b"".join(held)


def ordered(pool: ThreadPoolExecutor, work: Callable[[bytes], bytes], items: Iterator[bytes],
            in_flight: int) -> Iterator[bytes]:
    """pool.map that keeps at most `in_flight` items in memory and yields results in input order."""
    window: deque[Future] = deque()
    for item in items:
        window.append(pool.submit(work, item))
        if len(window) >= in_flight:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def ahead(items: Iterator[T], depth: int, failed: threading.Event | None = None) -> Iterator[T]:
    """`items` produced by a thread of their own, up to `depth` ahead of the consumer.

    The consumer (an upload waiting on the registry) and the producer (hashing and compressing the next chunk)
    then overlap. The producer's error is raised to the consumer; a consumer that stops early, or a `failed`
    event set elsewhere, stops the producer at its next item.
    """
    pipe: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                if not _offer(pipe, item, stop, failed):
                    return
            _offer(pipe, done, stop, failed)
        except BaseException as exc:  # handed to the consumer, who raises it
            _offer(pipe, _Raised(exc), stop, failed)
        finally:
            close = getattr(items, "close", None)
            if close:
                close()  # a generator left early releases what it holds (open files) here

    producer = threading.Thread(target=produce, name="ahead", daemon=True)
    producer.start()
    try:
        while True:
            try:
                item = pipe.get(timeout=0.5)
            except queue.Empty:
                if not producer.is_alive() and pipe.empty():
                    raise Aborted()  # it stopped because another layer failed
                continue
            if item is done:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        producer.join(timeout=30)


class _Raised:
    """An exception on its way from the producer thread to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _offer(pipe: queue.Queue, item: object, stop: threading.Event, failed: threading.Event | None) -> bool:
    """Put `item` unless the consumer stopped (or another layer failed); False then."""
    while not stop.is_set() and not (failed is not None and failed.is_set()):
        try:
            pipe.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False
