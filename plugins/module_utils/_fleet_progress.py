# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The progress of a fleet's pushes made side by side in one run (`_fleet_push`), written as one push's: the file
push_progress reads holds their counts summed (bytes of the archive done and in all, blobs) under one name, so the
percent and the time left follow the slowest registry."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    PushProgress,
    StatusFile,
)

SUMMED = ("bytes_total", "bytes_done", "bytes_sent", "blobs_total", "blobs_done", "blobs_mounted", "blobs_skipped")


def combined(image: str, states: list[dict[str, Any]]) -> dict[str, Any]:
    """One push's state for several: the counts summed (the blobs: the image's count for each push), the earliest
    start, the phase of the first not done."""
    state: dict[str, Any] = {key: sum(int(part.get(key, 0)) for part in states) for key in SUMMED}
    # Every push sends the same image: once one knows its blob count, each has that many (a follower that reads no
    # archive may never count them itself).
    state["blobs_total"] = max(int(part.get("blobs_total", 0)) for part in states) * len(states)
    running = [part["phase"] for part in states if part.get("phase") != "done"]
    state.update(image=image, phase=running[0] if running else "done",
                 started=min(part["started"] for part in states),
                 sending_since=min(part["sending_since"] for part in states))
    return state


class FleetProgress:
    """Writes the sum of the pushes that `join` it to `path` (None: nowhere), at most once a second unless forced."""

    def __init__(self, path: str | None, image: str, clock: Callable[[], float] = time.time) -> None:
        self.image = image
        self.members: list[PushProgress] = []
        self._lock = threading.Lock()
        self._file = StatusFile(path, clock)

    def join(self, progress: PushProgress) -> None:
        with self._lock:
            self.members.append(progress)
        progress.relay = self.write

    def write(self, force: bool = False) -> None:
        with self._lock:
            if self.members:
                self._file.write(combined(self.image, [member.snapshot() for member in self.members]), force)

    def remove(self) -> None:
        self._file.remove()
