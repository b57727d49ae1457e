# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What an image build and push has done so far, read from the output `docker build` and `docker push` print.

The agent_images role runs the vendor Makefile (`docker build`, then `docker push`) with its output going to a log
file; this reads that text, whole, each time (it is pure: text in, `BuildStatus` out). What the text can tell:

- build steps: the classic builder's `Step 5/12 : ...`, podman's (buildah's) `STEP 5/12: ...`, BuildKit's plain
  `#7 [5/12] ...` (`#7 [stage 5/12] ...` in a multi-stage build);
- the build's end: `Successfully built`, `Successfully tagged`, BuildKit's `naming to`;
- the push: `The push refers to repository [...]` starts one; Docker sends a line per layer (`<id>: Preparing`,
  `Waiting`, `Pushing`, `Pushed`, `Layer already exists`, `Mounted from <repository>`); `<tag>: digest: sha256:...
  size: N` ends it. podman's Docker API sends no layer lines, only the digest.

Bytes are never in this text: the docker CLI prints a layer's byte counts only to a terminal, so neither the bytes
sent nor a rate nor a time left can be known here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STEP = re.compile(r"^(?:Step|STEP) (\d+)/(\d+) ?: ")
BUILDKIT_STEP = re.compile(r"^#\d+ \[(?:\S+ )?(\d+)/(\d+)\] ")
BUILT = re.compile(r"^(?:Successfully built |Successfully tagged |#\d+ naming to )")
PUSH_START = re.compile(r"^The push refers to repository \[")
LAYER = re.compile(r"^([0-9a-f]{12,64}): (Preparing|Waiting|Pushing|Pushed|Layer already exists|Mounted from \S+"
                   r"|Retrying in .*)$")
DIGEST = re.compile(r"^\S+: digest: (sha256:[0-9a-f]{64}) size: \d+$")
DONE_LAYER = ("Pushed", "Layer already exists")


@dataclass
class BuildStatus:
    """One build-and-push as its output tells it. `phase`: starting, building, built, pushing or pushed."""

    phase: str = "starting"
    step: int = 0
    steps: int = 0
    layers: dict[str, str] = field(default_factory=dict)  # layer id -> its last state, for the current push
    digest: str = ""
    last_line: str = ""

    @property
    def layers_done(self) -> int:
        return sum(1 for state in self.layers.values() if state in DONE_LAYER or state.startswith("Mounted from"))

    @property
    def layers_mounted(self) -> int:
        return sum(1 for state in self.layers.values() if state.startswith("Mounted from"))

    @property
    def layers_existing(self) -> int:
        return sum(1 for state in self.layers.values() if state == "Layer already exists")


def parse_build_log(text: str) -> BuildStatus:
    """The status after reading all of `text` (a log still being written: its last, partial line is left out)."""
    status = BuildStatus()
    lines = re.split(r"\r\n|\r|\n", text)
    if text and not text.endswith(("\n", "\r")):
        lines = lines[:-1]
    for line in lines:
        _read_line(status, line.rstrip())
    return status


def _read_line(status: BuildStatus, line: str) -> None:
    if not line:
        return
    status.last_line = line
    step = STEP.match(line) or BUILDKIT_STEP.match(line)
    if step and status.phase in ("starting", "building", "built"):
        status.phase, status.step, status.steps = "building", int(step[1]), int(step[2])
    elif BUILT.match(line) and status.phase in ("starting", "building"):
        status.phase = "built"
    elif PUSH_START.match(line):
        status.phase, status.layers, status.digest = "pushing", {}, ""
    elif (layer := LAYER.match(line)) and status.phase == "pushing":
        status.layers[layer[1]] = layer[2]
    elif (digest := DIGEST.match(line)) and status.phase == "pushing":
        status.phase, status.digest = "pushed", digest[1]


def tail(text: str, lines: int = 15, width: int = 2000) -> str:
    """The last `lines` non-empty lines of a log (what a failed build said), at most `width` characters."""
    kept = [line.rstrip() for line in re.split(r"\r\n|\r|\n", text) if line.strip()][-lines:]
    joined = "\n".join(kept)
    return joined[-width:]
