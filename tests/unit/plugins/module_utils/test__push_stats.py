"""Phases: per-phase CPU, wall and bytes, summed over threads."""

from __future__ import annotations

import hashlib
import io
import threading

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_stats import (
    Phases,
    TimedReader,
    timed_chunks,
)


def test_work_in_several_threads_is_summed_per_phase():
    phases = Phases()

    def hash_some():
        for _round in range(20):
            with phases.timed("hash_layer", 1 << 20):
                hashlib.sha256(b"x" * (1 << 20)).digest()

    threads = [threading.Thread(target=hash_some) for _thread in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = phases.report()
    assert set(report) == {"hash_layer"}  # phases without work are left out
    assert report["hash_layer"]["bytes"] == 60 << 20 == phases.bytes("hash_layer")
    assert report["hash_layer"]["cpu"] > 0 and report["hash_layer"]["wall"] > 0


def test_a_timed_reader_counts_what_it_reads():
    phases = Phases()
    with TimedReader(io.BytesIO(b"a" * 5000), phases, "decompress") as reader:
        assert b"".join(iter(lambda: reader.read(1024), b"")) == b"a" * 5000
    assert phases.bytes("decompress") == 5000


def test_timed_chunks_counts_what_the_consumer_took_them_for():
    phases = Phases()
    sent = [len(chunk) for chunk in timed_chunks(iter([b"ab", b"cde"]), phases, "upload")]
    assert sent == [2, 3] and phases.bytes("upload") == 5 and phases.bytes("compress") == 0
