"""Shared by the progress suites (test_push_progress.py, test_awx_progress.py): a ~300 MB archive, the rig's plain-HTTP
registry behind a rate-limited loopback link, and the shapes of the progress and summary lines a push prints."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from fault_proxy import FaultProxy
from fixtures.image_archives import write_docker_archive

MB = 10**6
RATE = 12 * MB  # bytes per second through the proxy: ~300 MB take ~25 s
# a fleet's pushes made by one module run show as one: "<image> and N more registries"
PROGRESS = re.compile(r"^(?P<image>\S+(?: and \d+ more registr(?:y|ies))?): (?P<percent>\d+)% [\d.]+ [kMG]?B of [\d.]+ [kMG]?B, [\d.]+ MB/s, "
                      r"(about \w+ left|time left not known yet); blobs \d+( of \d+)? done \(\d+ mounted, \d+ skipped\)$")
SUMMARY = re.compile(r"^(?P<image>\S+): pushed, (?P<size>[\d.]+ [kMG]?B) archive, [\d.]+ [kMG]?B sent in [\d.]+s "
                     r"\([\d.]+ MB/s\)$")


@pytest.fixture(scope="session")
def large_archive(tmp_path_factory) -> Path:
    """A ~300 MB plain tar, made once per session, its content new each session (two 150 MB layers)."""
    layers = [{"opt/pps/model.bin": os.urandom(150 * MB)}, {"opt/pps/weights.bin": os.urandom(150 * MB)},
              {"etc/pps.conf": uuid.uuid4().hex.encode()}]
    path = tmp_path_factory.mktemp("large") / "pps-large.tar"
    return write_docker_archive(path, [f"datarobot/datarobot-portable-prediction-api:{uuid.uuid4().hex[:6]}"],
                                layers).path


@pytest.fixture
def slow_link(rig) -> Iterator[FaultProxy]:
    """The rig's plain-HTTP registry behind a loopback proxy that passes RATE bytes per second: the registry at
    `127.0.0.1:<proxy.port>`; `proxy.faults.body_bytes` counts what went through."""
    upstream = int(rig["RIG_INSECURE_REGISTRY"].rsplit(":", 1)[1])
    with FaultProxy(upstream) as proxy:
        proxy.faults.rate = RATE
        yield proxy


def rising(percents: list[int]) -> list[int]:
    """The percentages that are higher than every one before them."""
    return [percent for index, percent in enumerate(percents) if index == 0 or percent > max(percents[:index])]
