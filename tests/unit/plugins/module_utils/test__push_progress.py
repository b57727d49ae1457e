"""Progress of a push: the counts the pushers keep, the file they write, the lines a user reads."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_push import PushCache
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    FIELDS,
    PushProgress,
    PushWatchTimeout,
    human_bytes,
    human_duration,
    parse_status,
    progress_line,
    rate_and_eta,
    summary_line,
    watch,
)
from fixtures.image_archives import write_docker_archive
from test__image_push import MemoryRegistry, pusher


def sending(**fields):
    status = dict(image="reg:5000/pps:9.2.0", phase="sending", started=100.0, sending_since=100.0,
                  bytes_total=300_000_000, bytes_done=120_000_000, bytes_sent=118_000_000, blobs_total=4,
                  blobs_done=1, blobs_mounted=1, blobs_skipped=0)
    status.update(fields)
    return status


def test_sizes_and_durations_read_as_people_write_them():
    assert [human_bytes(n) for n in (999, 12_345, 301_200_000, 3_400_000_000)] == \
        ["999 B", "12.3 kB", "301.2 MB", "3.40 GB"]
    assert [human_duration(s) for s in (17, 185, 3720, 59.6)] == ["17s", "3m05s", "1h02m", "1m00s"]


def test_rate_and_time_left_follow_what_was_done_so_far():
    assert rate_and_eta(120, 300, 10.0) == (12.0, 15.0)
    assert rate_and_eta(0, 300, 10.0) == (0.0, None)  # nothing moved yet: no guess
    assert rate_and_eta(300, 300, 10.0) == (30.0, 0.0)
    assert rate_and_eta(310, 300, 10.0)[1] == 0.0  # never a negative time left


def test_a_progress_line_says_bytes_percent_rate_time_left_and_blobs():
    assert progress_line(sending(), now=110.0) == (
        "reg:5000/pps:9.2.0: 40% 120.0 MB of 300.0 MB, 12.0 MB/s, about 15s left; "
        "blobs 1 of 4 done (1 mounted, 0 skipped)")


def test_the_rate_counts_from_when_sending_began_not_from_the_index_read():
    line = progress_line(sending(started=0.0, sending_since=100.0), now=110.0)
    assert "12.0 MB/s" in line and "about 15s left" in line


def test_before_anything_moved_and_before_the_blob_count_is_known():
    line = progress_line(sending(bytes_done=0, blobs_total=0, blobs_done=0, blobs_mounted=0), now=100.0)
    assert line.endswith("0% 0 B of 300.0 MB, 0.0 MB/s, time left not known yet; blobs 0 done (0 mounted, "
                         "0 skipped)")
    assert progress_line(sending(phase="indexing"), 110.0) == \
        "reg:5000/pps:9.2.0: reading the archive's index (300.0 MB archive)"
    assert progress_line(sending(phase="loading"), 110.0).endswith("left (loading into the Docker API)")


def test_the_summary_line_says_size_bytes_sent_time_and_throughput():
    assert summary_line("reg/pps:9.2.0", 3_410_000_000, 1_200_000_000, 95.3) == \
        "reg/pps:9.2.0: pushed, 3.41 GB archive, 1.20 GB sent in 95.3s (12.6 MB/s)"
    assert summary_line("reg/pps:9.2.0", 1000, 0, 0.0, changed=False) == \
        "reg/pps:9.2.0: already in the registry, 1.0 kB archive, 0 B sent in 0.0s (0.0 MB/s)"


def test_the_file_is_replaced_whole_private_and_at_most_once_a_second(tmp_path):
    now = [0.0]
    path = tmp_path / "progress.json"
    progress = PushProgress(str(path), "reg/pps:1", 1000, clock=lambda: now[0])
    progress.phase("sending")
    assert json.loads(path.read_text())["phase"] == "sending"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    progress.read(10)  # within the second: not written
    assert json.loads(path.read_text())["bytes_done"] == 0
    now[0] = 1.5
    progress.read(10)
    assert json.loads(path.read_text())["bytes_done"] == 20
    assert set(json.loads(path.read_text())) == set(FIELDS)
    assert os.listdir(tmp_path) == ["progress.json"]  # no temporary file left beside it
    progress.finish()
    assert json.loads(path.read_text())["bytes_done"] == 1000
    progress.remove()
    progress.remove()  # twice is fine
    assert not path.exists()


def test_a_progress_file_that_cannot_be_written_never_fails_the_push(tmp_path):
    progress = PushProgress(str(tmp_path / "gone" / "progress.json"), "reg/pps:1", 10)
    progress.phase("sending")
    progress.finish()


class Recorder(PushProgress):
    """Every state the pusher reports, as it reports it."""

    def __init__(self, total):
        super().__init__(None, "reg/pps:1", total)
        self.seen = []

    def write(self, force=False):
        self.seen.append(dict(self.state))


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz one pass"])
def test_the_pusher_counts_archive_bytes_and_blobs_as_it_goes(tmp_path, compress):
    facts = write_docker_archive(tmp_path / "a.tar", ["pps:1"], [{"model.bin": os.urandom(3_000_000)},
                                                                 {"data.bin": os.urandom(2_000_000)}, {}],
                                 compress=compress)
    total = facts.path.stat().st_size
    progress = Recorder(total)
    pusher(MemoryRegistry(), progress=progress).push(str(facts.path))
    sending = [state for state in progress.seen if state["phase"] == "sending"]
    done = [state["bytes_done"] for state in sending]
    assert done == sorted(done) and done[-1] >= 0.9 * total  # counted while it ran, not only set at the end
    assert sending[-1]["blobs_done"] == 4  # three layers and the config
    assert progress.state["phase"] == "done" and progress.state["bytes_done"] == total
    assert progress.state["blobs_total"] == 4


def test_blobs_the_registry_holds_count_as_done_and_skipped(tmp_path):
    facts = write_docker_archive(tmp_path / "a.tar", ["pps:1"], [{"model.bin": os.urandom(1_000_000)}, {}])
    client = MemoryRegistry()
    cache = PushCache(None)
    pusher(client, cache=cache).push(str(facts.path))
    other = write_docker_archive(tmp_path / "b.tar", ["pps:2"], [{"model.bin": b"new"}, {}])
    progress = Recorder(other.path.stat().st_size)
    pusher(client, cache=cache, progress=progress).push(str(other.path))
    assert progress.state["blobs_skipped"] == 1 and progress.state["blobs_done"] == 3  # the empty layer was there


def test_watch_shows_lines_until_the_job_ends_then_its_summary():
    jobs = iter([{"finished": False}, {"finished": False}, {"finished": True, "changed": True, "summary": "the end"}])
    statuses = iter([None, sending(), sending()])
    shown, slept = [], []
    clock = [0.0]

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds + 0.5  # the checks take time too

    stalled = []
    job = watch(lambda moved_not: stalled.append(moved_not) or next(jobs), statuses.__next__, shown.append,
                interval=5, timeout=60, sleep=sleep, clock=lambda: clock[0], now=lambda: 110.0)
    assert job["summary"] == "the end"
    assert shown == [progress_line(sending(), 110.0), "the end"]
    assert slept == [5.0, 4.5]  # the rhythm holds: the time the checks took is not added
    assert stalled == [True, False, True]  # liveness is asked for when the progress did not move


def test_watch_ends_with_the_summary_of_every_registry_a_fleet_run_pushed_to():
    job = {"finished": True, "changed": True, "summary": "own: pushed",
           "fleet": {"cluster-1": {"summary": "one: pushed"}, "cluster-2": {"failed": True, "msg": "refused"}}}
    shown = []
    watch(lambda stalled: job, lambda: None, shown.append, interval=1, timeout=5, sleep=lambda seconds: None)
    assert shown == ["own: pushed", "one: pushed"]  # a failed registry's message is its own host's failure


def test_watch_returns_a_failed_job_and_gives_up_after_its_timeout():
    failed = watch(lambda stalled: {"failed": True, "msg": "could not find job"}, lambda: None, print, interval=1,
                   timeout=5, sleep=lambda s: None)
    assert failed["msg"] == "could not find job"
    clock = [0.0]

    def sleep(seconds):
        clock[0] += seconds

    with pytest.raises(PushWatchTimeout, match="still running after 10s"):
        watch(lambda stalled: {"finished": False}, lambda: None, print, interval=3, timeout=10,
              sleep=sleep, clock=lambda: clock[0])


def test_a_status_file_keeps_its_known_fields_only():
    assert parse_status('{"bytes_done": 1, "password": "x"}') == {"bytes_done": 1}
    assert parse_status('{"bytes_do') is None and parse_status("[1]") is None


def test_writes_are_skipped_without_a_path():
    progress = PushProgress(None, "x", 1)
    progress.read(1)
    progress.finish()
    progress.remove()
    assert progress.state["bytes_done"] == 1
