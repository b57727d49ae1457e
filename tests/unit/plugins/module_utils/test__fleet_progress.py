"""One progress file for a fleet's pushes made side by side: their counts summed under one name."""

from __future__ import annotations

import json

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._fleet_progress import (
    FleetProgress,
    combined,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import PushProgress


def test_counts_are_summed_and_the_line_runs_until_every_push_is_done():
    first = {"phase": "done", "started": 10.0, "sending_since": 11.0, "bytes_total": 100, "bytes_done": 100,
             "bytes_sent": 60, "blobs_total": 4, "blobs_done": 4, "blobs_mounted": 1, "blobs_skipped": 0}
    second = {**first, "phase": "sending", "started": 9.0, "sending_since": 12.0, "bytes_done": 30, "blobs_done": 1}
    state = combined("r/pps:1 and 1 more registry", [first, second])
    assert state["image"] == "r/pps:1 and 1 more registry"
    assert (state["bytes_total"], state["bytes_done"], state["blobs_done"], state["blobs_mounted"]) == (200, 130, 5, 2)
    assert (state["phase"], state["started"], state["sending_since"]) == ("sending", 9.0, 11.0)
    assert combined("x", [first, first])["phase"] == "done"
    assert combined("x", [first, {**second, "blobs_total": 0}])["blobs_total"] == 8  # the same image: 4 each


def test_the_members_write_through_the_fleet_file(tmp_path):
    path = tmp_path / "progress.json"
    clock = iter(range(100, 1000, 5)).__next__  # seconds apart: every write goes through
    fleet = FleetProgress(str(path), "r/pps:1 and 1 more registry", clock=clock)
    own, other = PushProgress(None, "r/pps:1", 100), PushProgress(None, "s/pps:1", 100)
    fleet.join(own)
    fleet.join(other)
    own.phase("sending")
    own.read(40)
    other.read(10)
    written = json.loads(path.read_text())
    assert (written["image"], written["bytes_total"], written["bytes_done"]) == ("r/pps:1 and 1 more registry", 200, 50)
    own.finish()
    assert json.loads(path.read_text())["phase"] != "done"  # the other still runs
    other.finish()
    assert json.loads(path.read_text())["phase"] == "done"
    fleet.remove()
    assert not path.exists()
