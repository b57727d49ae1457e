# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What a running push has done so far, and the lines a user reads about it.

An Ansible module cannot print while it runs. The push writes its state into a small JSON file (`PushProgress`,
rewritten atomically at most once a second, mode 0600, holding counts and the image name only: never a credential
or a registry answer); the collection's `push_progress` action reads it while the background push runs
(`_push_job`) and prints `progress_line()` every few seconds, then `summary_line()` from the job's result.

Bytes are counted as the archive is read (compressed bytes of a gzip archive, member bytes of a plain tar), against
the archive's size, so the rate and the time left follow the slowest part, whether that is reading, compressing or
sending. Layers the registry already holds, or mounts, count as done. A push that follows another push of the same
archive reads none of it: it is credited each layer's share of the archive as it sends the layer (_follow_progress).
Bytes done never pass the archive's size before the push ends.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._json_file import write_json

WRITE_EVERY = 1.0  # seconds between two rewrites of the file
FIELDS = ("image", "phase", "started", "sending_since", "bytes_total", "bytes_done", "bytes_sent", "blobs_total",
          "blobs_done", "blobs_mounted", "blobs_skipped")
PHASES = {"checking": "checking the registry", "indexing": "reading the archive's index",
          "sending": "sending", "loading": "loading into the Docker API", "pushing": "pushing through the Docker API",
          "done": "done"}


class PushProgress:
    """Counters of one push, shared by its threads; written to `path` (None: kept in memory only)."""

    def __init__(self, path: str | None, image: str = "", total: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = path, clock
        now = clock()
        self.state: dict[str, Any] = dict.fromkeys(FIELDS, 0)
        self.state.update(image=image, phase="checking", started=now, sending_since=now, bytes_total=total)
        self._lock = threading.Lock()
        self._file = StatusFile(path, clock)
        self.on_sent: Callable[[int], None] | None = None  # told every count `sent` is told
        # Without a file of its own: told when the file would be written (a FleetProgress writes the pushes' sum)
        self.relay: Callable[[bool], None] | None = None

    def phase(self, name: str) -> None:
        with self._lock:
            self.state["phase"] = name
            if name in ("sending", "loading", "pushing"):
                self.state["sending_since"] = self.clock()
            if name == "pushing":  # counted again from nothing: the Docker API's own push, if it tells its bytes
                self.state.update(bytes_done=0, bytes_sent=0, blobs_total=0, blobs_done=0, blobs_mounted=0,
                                  blobs_skipped=0)
        self.write(force=True)

    def expect_bytes(self, count: int) -> None:
        """The push will take `count` bytes (an image the Docker API holds: its size, as its push counts them)."""
        with self._lock:
            self.state["bytes_total"] = count
        self.write()

    def expect_blobs(self, count: int) -> None:
        with self._lock:
            self.state["blobs_total"] = count
        self.write()

    def read(self, count: int) -> None:
        """`count` more bytes of the archive read."""
        self._add(bytes_done=count)

    def credit(self, count: int) -> None:
        """`count` more bytes of the archive done without reading them (a push following another's spool)."""
        self._add(bytes_done=count)

    def sent(self, count: int) -> None:
        """`count` more bytes sent to the registry."""
        self._add(bytes_sent=count)
        if self.on_sent:
            self.on_sent(count)

    def blob(self, *, skipped: bool = False, mounted: bool = False, size: int = 0) -> None:
        """A blob done: sent, or found in the registry (`skipped`, `size` bytes of the archive not read)."""
        self._add(blobs_done=1, blobs_skipped=int(skipped and not mounted), blobs_mounted=int(mounted),
                  bytes_done=size)

    def finish(self) -> None:
        with self._lock:
            self.state["bytes_done"] = self.state["bytes_total"]
            self.state["blobs_total"] = max(self.state["blobs_total"], self.state["blobs_done"])
            self.state["phase"] = "done"
        self.write(force=True)

    def _add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                self.state[key] += value
            if self.state["bytes_total"]:  # never past the archive (a follower's credits are estimates)
                self.state["bytes_done"] = min(self.state["bytes_done"], self.state["bytes_total"])
        self.write()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.state)

    def write(self, force: bool = False) -> None:
        """Replace the file with the current state (at most once a second unless `force`)."""
        if not self.path:
            if self.relay:
                self.relay(force)
            return
        with self._lock:
            self._file.write(self.state, force)

    def remove(self) -> None:
        self._file.remove()


class StatusFile:
    """A push's progress file: rewritten atomically, at most once a second unless forced, and never a reason for the
    push to fail (a full disk or a removed directory only loses the courtesy)."""

    def __init__(self, path: str | None, clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = path, clock
        self._written = 0.0

    def write(self, state: dict[str, Any], force: bool = False) -> None:
        """Write `state` unless one was written less than WRITE_EVERY seconds ago (the caller holds its lock)."""
        now = self.clock()
        if not self.path or (not force and now - self._written < WRITE_EVERY):
            return
        self._written = now
        try:
            write_json(self.path, state)
        except OSError:
            pass

    def remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def human_bytes(count: float) -> str:
    """Decimal units, as MB/s is read: 999 B, 12.3 kB, 301.2 MB, 3.40 GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}" if unit == "GB" else f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


def human_duration(seconds: float) -> str:
    """17s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate_and_eta(done: int, total: int, elapsed: float) -> tuple[float, float | None]:
    """Bytes per second so far, and the seconds left at that rate (None until something moved)."""
    if elapsed <= 0 or done <= 0:
        return 0.0, None
    rate = done / elapsed
    return rate, max(total - done, 0) / rate


def progress_line(status: dict[str, Any], now: float) -> str:
    """One line about a running push, from the state `PushProgress` wrote."""
    done, total = int(status.get("bytes_done", 0)), int(status.get("bytes_total", 0))
    phase = status.get("phase", "")
    head = f"{status.get('image') or 'push'}: "
    if phase == "pushing" and done <= 0:  # a Docker API that tells nothing while it pushes (podman's)
        elapsed = max(0.0, now - float(status.get("sending_since", now)))
        return f"{head}pushing through the Docker API for {human_duration(elapsed)} ({human_bytes(total)})"
    if phase not in ("sending", "loading", "pushing", "done"):
        return head + PHASES.get(phase, phase) + f" ({human_bytes(total)} archive)"
    percent = min(100, int(done * 100 / total)) if total else 0
    rate, left = rate_and_eta(done, total, now - float(status.get("sending_since", now)))
    text = f"{head}{percent}% {human_bytes(done)} of {human_bytes(total)}, {rate / 1e6:.1f} MB/s, "
    text += f"about {human_duration(left)} left" if left is not None else "time left not known yet"
    if phase == "loading":
        return text + " (loading into the Docker API)"
    if phase == "pushing":
        text += " (pushing through the Docker API)"
    blobs_total = int(status.get("blobs_total", 0))
    of_total = f" of {blobs_total}" if blobs_total else ""
    return (text + f"; blobs {status.get('blobs_done', 0)}{of_total} done ({status.get('blobs_mounted', 0)} mounted, "
            f"{status.get('blobs_skipped', 0)} skipped)")


def summary_line(image: str, size: int, sent: int, seconds: float, changed: bool = True) -> str:
    """The end-of-push line: the archive's size, the bytes actually sent, the time and the throughput."""
    rate = sent / seconds / 1e6 if seconds > 0 else 0.0
    state = "pushed" if changed else "already in the registry"
    return (f"{image}: {state}, {human_bytes(size)} archive, {human_bytes(sent)} sent in {seconds:.1f}s "
            f"({rate:.1f} MB/s)")


class PushWatchTimeout(MlopsError):
    """The push job did not end within the time it was given."""


def watch(poll_job: Callable[[bool], dict[str, Any]], read_status: Callable[[], dict[str, Any] | None],
          show: Callable[[str], None], *, interval: float, timeout: float,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
          now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Until the job ends: read its progress, ask its status, show a progress line, wait `interval` seconds.

    `poll_job(stalled)` answers `{"finished": False}` while the job runs, else its result; `stalled` is True when the
    progress did not move since the last look (or there is none), the time to check that the job is still alive.
    Returns the job's result (failed or not); a job still running after `timeout` seconds is a `PushWatchTimeout`.
    """
    start = clock()
    deadline, ticks, last = start + timeout, 0, None
    while True:
        status = read_status()
        job = poll_job(status is None or status == last)
        if job.get("finished") or job.get("failed"):
            # its own push's line, then those of the registries it pushed to for a fleet (`fleet`)
            for summary in [job.get("summary")] + [entry.get("summary") for entry in (job.get("fleet") or {}).values()
                                                   if isinstance(entry, dict)]:
                if summary:
                    show(str(summary))
            return job
        if status:
            show(progress_line(status, now()))
        last = status
        if clock() >= deadline:
            raise PushWatchTimeout(f"The background push is still running after {human_duration(timeout)}; it "
                                   "stops itself at its own time limit. Give it longer (mlops_pps_image_background_"
                                   "seconds, or mlops_agent_images_background_seconds) or look at the registry and "
                                   "the network between it and this host.")
        ticks += 1  # lines keep their rhythm however long the two checks took
        sleep(max(0.0, start + ticks * interval - clock()))


def parse_status(text: str) -> dict[str, Any] | None:
    """The known fields of a progress file's text; None when it is not (yet) a complete status."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {key: data[key] for key in FIELDS if key in data}
