from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_pipeline import (
    Aborted,
    Feeder,
    ahead,
    ordered,
    rechunk,
)


@pytest.mark.parametrize("pieces", [
    [b"abcdefghij"],
    [b"a", b"bc", b"", b"def", b"ghij", b"k"],
    [b"abc", b"def", b"ghi", b"j"],
    [b"x" * 7, b"y" * 3, b"z" * 11],
])
def test_rechunk_gives_fixed_chunks_and_keeps_every_byte(pieces):
    chunks = list(rechunk(iter(pieces), 3))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) == 3 for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 3


def test_rechunk_passes_whole_chunks_as_they_are_and_cuts_the_rest_once():
    whole, other = b"a" * 4, b"b" * 4
    long = b"0123456789"
    chunks = list(rechunk(iter([whole, other, b"c", long, whole]), 4))
    assert chunks[0] is whole and chunks[1] is other  # no copy of a read that is a chunk already
    assert chunks[2:] == [b"c012", b"3456", b"789a", b"aaa"]
    assert {type(chunk) for chunk in chunks} == {bytes}


def test_rechunk_of_nothing_is_nothing():
    assert list(rechunk(iter([b"", b""]), 4)) == []


def test_ordered_yields_in_input_order_while_work_finishes_out_of_order():
    def slow_for_small(item: bytes) -> bytes:
        time.sleep(0.02 / len(item))
        return item.upper()

    items = [b"a" * n for n in (1, 5, 2, 4, 3)]
    with ThreadPoolExecutor(4) as pool:
        assert list(ordered(pool, slow_for_small, iter(items), 3)) == [item.upper() for item in items]


def test_ordered_keeps_at_most_in_flight_items():
    running, peak, lock = [0], [0], threading.Lock()

    def work(item: bytes) -> bytes:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return item

    with ThreadPoolExecutor(8) as pool:
        assert len(list(ordered(pool, work, iter([b"x"] * 20), 2))) == 20
    assert peak[0] <= 2


def test_feeder_hands_each_task_all_of_its_bytes():
    def total(layer, chunks):
        return layer, b"".join(chunks)

    data = {"one": b"1" * 3_000_000, "two": b"2" * 10}
    with Feeder(2) as feeder:
        futures = {name: feeder.submit(total, name, io.BytesIO(body)) for name, body in data.items()}
    assert {name: future.result()[1] for name, future in futures.items()} == data


def test_a_failing_task_stops_the_feeding_and_its_error_is_raised():
    def fail(layer, chunks):
        next(iter(chunks))
        raise ValueError("layer broke")

    endless = io.BytesIO(b"z" * (64 * 1024 * 1024))  # far more than the bounded queue holds
    with pytest.raises(ValueError, match="layer broke"):
        with Feeder(1) as feeder:
            feeder.submit(fail, "layer", endless)


def test_ahead_gives_every_item_in_order_from_another_thread():
    threads = set()

    def produce():
        for number in range(50):
            threads.add(threading.current_thread().name)
            yield number

    assert list(ahead(produce(), 2)) == list(range(50))
    assert threads == {"ahead"}


def test_ahead_produces_while_the_consumer_is_busy_but_no_further_than_its_depth():
    produced = []

    def produce():
        for number in range(10):
            produced.append(number)
            yield number

    items = ahead(produce(), 2)
    assert next(items) == 0
    deadline = time.monotonic() + 10
    while len(produced) < 4 and time.monotonic() < deadline:  # 0 handed over, 1 and 2 queued, 3 waiting to go in
        time.sleep(0.01)
    time.sleep(0.2)
    assert produced == [0, 1, 2, 3]
    assert list(items) == list(range(1, 10))


def test_ahead_raises_the_producers_error_to_the_consumer():
    def produce():
        yield b"first"
        raise ValueError("compression broke")

    items = ahead(produce(), 1)
    assert next(items) == b"first"
    with pytest.raises(ValueError, match="compression broke"):
        next(items)


def test_a_consumer_that_stops_early_stops_the_producer_and_closes_its_source():
    closed = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    items = ahead(produce(), 1)
    assert next(items) == 0
    items.close()  # the upload failed: the consumer leaves
    assert closed.wait(10)


def test_ahead_gives_up_when_another_layer_failed():
    failed = threading.Event()

    def produce():
        yield 1
        failed.set()  # meanwhile another layer's thread failed
        yield 2

    items = ahead(produce(), 1, failed)
    with pytest.raises(Aborted):
        list(items)
