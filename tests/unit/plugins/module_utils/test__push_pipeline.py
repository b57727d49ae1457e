from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_pipeline import (
    Feeder,
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
