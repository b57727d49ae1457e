# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The progress of a fleet's pushes made side by side in one run (`_fleet_push`), written as one push's: the file
push_progress reads holds their counts summed (bytes of the archive done and in all, blobs) under one name, so the
percent and the time left follow the slowest registry, and the line says 100% only when every push has ended."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._json_file import write_json
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    WRITE_EVERY,
    PushProgress,
)

SUMMED = ("bytes_total", "bytes_done", "bytes_sent", "blobs_total", "blobs_done", "blobs_mounted", "blobs_skipped")


def combined(image: str, states: list[dict[str, Any]]) -> dict[str, Any]:
    """One push's state for several: the counts summed, the earliest start, the phase of the first not done."""
    state: dict[str, Any] = {key: sum(int(part.get(key, 0)) for part in states) for key in SUMMED}
    running = [part["phase"] for part in states if part.get("phase") != "done"]
    state.update(image=image, phase=running[0] if running else "done",
                 started=min(part["started"] for part in states),
                 sending_since=min(part["sending_since"] for part in states))
    return state


class FleetProgress:
    """Writes the sum of the pushes that `join` it to `path` (None: nowhere), at most once a second unless forced."""

    def __init__(self, path: str | None, image: str, clock: Callable[[], float] = time.time) -> None:
        self.path, self.image, self.clock = path, image, clock
        self.members: list[PushProgress] = []
        self._lock = threading.Lock()
        self._written = 0.0

    def join(self, progress: PushProgress) -> None:
        with self._lock:
            self.members.append(progress)
        progress.relay = self.write

    def write(self, force: bool = False) -> None:
        if not self.path:
            return
        with self._lock:
            now = self.clock()
            if not self.members or (not force and now - self._written < WRITE_EVERY):
                return
            self._written = now
            state = combined(self.image, [member.snapshot() for member in self.members])
            try:
                write_json(self.path, state)
            except OSError:
                pass  # progress is a courtesy: a full disk or a removed directory never fails the push

    def remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass
