# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Watching image builds that run as async jobs: a line per image every few seconds, then a summary line each.

The jobs (the vendor Makefile's `make push`, one per image) write their output into a log file; `watch_builds` asks
each job's status, reads its log (`_build_log.parse_build_log`) and shows `progress_line()` until every job ended,
then returns what each did. Lines name what the output tells (build step, push phase, layers done, mounted or
already in the registry) and the time so far; bytes are not in the output (see `_build_log`), so they are never shown.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._build_log import (
    BuildStatus,
    parse_build_log,
    tail,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import human_duration

DELTA = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")  # ansible.builtin.command's `delta`, 0:01:20.123456


@dataclass
class BuildJob:
    """One image's build running as an async job, and what became of it."""

    jid: str
    image: str
    log: str
    key: str = ""
    result: dict[str, Any] | None = None
    status: BuildStatus = field(default_factory=BuildStatus)
    text: str = ""
    seconds: float = 0.0


class BuildWatchTimeout(MlopsError):
    """A build job did not end within the time it was given."""


def layer_counts(status: BuildStatus) -> str:
    """`3 of 8 layers done (1 mounted, 2 already there)`, or "" when the output names no layer (podman)."""
    if not status.layers:
        return ""
    return (f"{status.layers_done} of {len(status.layers)} layers done ({status.layers_mounted} mounted, "
            f"{status.layers_existing} already there)")


def progress_line(image: str, status: BuildStatus, elapsed: float) -> str:
    """One line about a running build: its phase, what is known of it, and the time so far."""
    so_far = human_duration(elapsed)
    if status.phase == "building":
        return f"{image}: building, step {status.step} of {status.steps}, {so_far}"
    if status.phase == "built":
        steps = f" ({status.steps} steps)" if status.steps else ""
        return f"{image}: built{steps}, {so_far}"
    if status.phase == "pushing":
        counts = layer_counts(status)
        return f"{image}: pushing, {counts + ', ' if counts else ''}{so_far}"
    if status.phase == "pushed":
        return f"{image}: pushed, {so_far}"
    return f"{image}: starting, {so_far}"


def summary_line(image: str, status: BuildStatus, seconds: float) -> str:
    """The end-of-build line: time taken, build steps, and the push's layers when the output named them. "built and
    pushed" only where the output shows a push (the agent_images role's builds push nothing: it pushes after them)."""
    details = [f"{status.steps} build steps"] if status.steps else []
    if status.layers:
        details.append(f"{len(status.layers)} layers: {status.layers_mounted} mounted, "
                       f"{status.layers_existing} already there")
    detail = f" ({'; '.join(details)})" if details else ""
    done = "built and pushed" if status.phase in ("pushing", "pushed") else "built"
    return f"{image}: {done} in {human_duration(seconds)}{detail}"


def job_seconds(result: dict[str, Any], fallback: float) -> float:
    """The job's own run time (the command's `delta`), else `fallback` (as seen by the watcher)."""
    found = DELTA.match(str(result.get("delta", "")))
    if not found:
        return fallback
    return int(found[1]) * 3600 + int(found[2]) * 60 + float(found[3])


def failure_message(failed: list[BuildJob]) -> str:
    """What each failed build said last, and what to look at."""
    parts = []
    for job in failed:
        said = tail(job.text) or str((job.result or {}).get("msg", "")).strip() or "no output"
        parts.append(f"Building and pushing {job.image} failed (exit status {(job.result or {}).get('rc', '?')}); "
                     f"the build's last lines:\n{said}")
    return "\n".join(parts) + ("\nThe vendor Makefile runs docker build and docker push: check the Docker API "
                               "(DOCKER_HOST), its access to the registry (CA, login), and the lines above.")


def _tick(job: BuildJob, poll: Callable[[BuildJob], dict[str, Any]], read_log: Callable[[BuildJob], str | None],
          show: Callable[[str], None], elapsed: float) -> None:
    """Ask one running job's status; show its summary if it ended, else a progress line from its log."""
    status = poll(job)
    text = read_log(job)
    if text is not None:
        job.text, job.status = text, parse_build_log(text)
    if status.get("finished") or status.get("failed"):
        job.result, job.seconds = status, job_seconds(status, elapsed)
        if not status.get("failed") and not status.get("rc"):
            show(summary_line(job.image, job.status, job.seconds))
        return
    show(progress_line(job.image, job.status, elapsed))


def watch_builds(jobs: list[BuildJob], poll: Callable[[BuildJob], dict[str, Any]],
                 read_log: Callable[[BuildJob], str | None], show: Callable[[str], None], *, interval: float,
                 timeout: float, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> list[BuildJob]:
    """Until every job ended: a line per running job every `interval` seconds. Returns the jobs with their results;
    a job still running after `timeout` seconds is a `BuildWatchTimeout`."""
    start = clock()
    ticks = 0
    while True:
        for job in jobs:
            if job.result is None:
                _tick(job, poll, read_log, show, clock() - start)
        running = [job for job in jobs if job.result is None]
        if not running:
            return jobs
        if clock() - start >= timeout:
            raise BuildWatchTimeout(
                f"Building {', '.join(job.image for job in running)} is still going after {human_duration(timeout)}; "
                "it is stopped at its own time limit. Give it longer (mlops_agent_images_build_timeout), or look at "
                f"the build's last lines:\n{tail(running[0].text) or 'no output yet'}")
        ticks += 1  # lines keep their rhythm however long the checks took
        sleep(max(0.0, start + ticks * interval - clock()))
