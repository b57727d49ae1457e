"""`make integration` runs on pytest-xdist workers, each on a rig of its own (tests/integration/conftest.py).

Proven here: `make rig-down` stops a worker's rig beside the checkout's (nothing of it left running or listening), the
ledger keeps every line when two processes write at once, the folder each worker's rig lives in, and the order whole
files are handed out in.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, RIG_FOLDERS, Ledger, file_order, worker_rig_dir

sys.path.insert(0, str(REPO / "tests" / "rig"))
from processes import port_open, start_time  # noqa: E402  the rig's own pid-file and port checks

RIG_PY = REPO / "tests" / "rig" / "rig.py"
# A rig's own variables, which the rig started here must not take from this test's rig.
RIG_VARIABLES = ("RIG_DIR", "KUBECONFIG", "K8S_AUTH_KUBECONFIG", "DOCKER_HOST", "MAKEFLAGS", "MAKELEVEL")


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in RIG_VARIABLES}
    env.update(extra)
    return env


def _recorded(state: Path) -> dict[int, str]:
    """pid -> start time of each daemon a rig's pid files name."""
    return {int(pid): started for pid, started in
            (path.read_text().split() for path in (state / "pids").glob("*.pid"))}


@pytest.fixture
def lone_base():
    """/tmp/rg-XXXX/.rig: short (podman's socket path must stay under 108 bytes) and no checkout's rig."""
    folder = Path(tempfile.mkdtemp(prefix="rg-", dir="/tmp"))
    yield folder / ".rig"
    for state in folder.glob(".rig*"):
        if (state / "ports.json").exists():  # whatever the test left running (a failed assertion) goes down here
            subprocess.run([sys.executable, str(RIG_PY), "down"], env=_env(RIG_DIR=str(state)), capture_output=True,
                           check=False, timeout=300)
    shutil.rmtree(folder, ignore_errors=True)


def test_make_rig_down_also_stops_the_rig_of_a_worker(lone_base):
    """A worker's rig (`<RIG_DIR>-gw1`) started beside the checkout's: `make rig-down` stops both, and every daemon the
    worker's rig recorded is gone and none of its ports answers afterwards."""
    worker = lone_base.with_name(".rig-gw1")
    up = subprocess.run([sys.executable, str(RIG_PY), "up"], env=_env(RIG_DIR=str(worker)), capture_output=True,
                        text=True, check=False, timeout=900)
    assert up.returncode == 0, up.stderr[-3000:]
    recorded = _recorded(worker)
    ports = json.loads((worker / "ports.json").read_text())
    assert recorded and all(start_time(pid) == started for pid, started in recorded.items())
    assert all(port_open(port) for name, port in ports.items() if name not in ("etcd_peer",)), ports

    down = subprocess.run(["make", "rig-down"], cwd=REPO, env=_env(RIG_DIR=str(lone_base)), capture_output=True,
                          text=True, check=False, timeout=600)

    assert down.returncode == 0, down.stdout + down.stderr
    alive = [pid for pid, started in recorded.items() if start_time(pid) == started]
    assert not alive, f"daemons of the worker's rig still running after make rig-down: {alive}\n{down.stderr}"
    listening = {name: port for name, port in ports.items() if port_open(port)}
    assert not listening, f"the worker's rig still listens: {listening}"
    assert not (worker / "env").exists()


def test_each_worker_has_a_rig_folder_of_its_own(rig):
    base = REPO / ".rig"
    assert worker_rig_dir(base, None) == base
    assert worker_rig_dir(base, "gw0") == base
    assert worker_rig_dir(base, "gw1") == REPO / ".rig-gw1"
    assert worker_rig_dir(Path("/tmp/x/state"), "gw3") == Path("/tmp/x/state-gw3")
    # this process drives the rig of its worker (gw1 and up: not the checkout's), through that rig's kubeconfig
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    assert Path(rig["RIG_DIR"]) == RIG_FOLDERS["own"] == worker_rig_dir(RIG_FOLDERS["base"], worker)
    assert (RIG_FOLDERS["own"] == RIG_FOLDERS["base"]) == (worker in (None, "gw0"))
    assert Path(rig["KUBECONFIG"]).is_relative_to(rig["RIG_DIR"])
    assert Path(rig["DOCKER_HOST"].removeprefix("unix://")).is_relative_to(rig["RIG_DIR"])


def _write_rows(path: str, writer: int, rows: int) -> None:
    ledger = Ledger(Path(path), f"writer-{writer}")
    for row in range(rows):
        # lines of very different lengths (one over 64 KiB), so that writes of two processes could interleave
        ledger.record("fault", f"w{writer}-r{row}-" + "x" * (70_000 if row % 50 == 0 else row), held=True,
                      detail="d" * 300, count=row)


def test_ledger_lines_written_by_two_processes_at_once_all_arrive_whole(tmp_path):
    path = tmp_path / "reliability.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_rows, args=(str(path), writer, 400)) for writer in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 800
    assert sorted(record["case"].split("-", 2)[1] for record in records if record["test"] == "writer-0") == \
        sorted(f"r{row}" for row in range(400))
    assert {record["test"] for record in records} == {"writer-0", "writer-1"}


def test_files_are_handed_out_longest_first():
    seconds = {"test_a.py": 10.0, "test_b.py": 300.0, "reliability/test_c.py": 120.0, "test_d.py": 10.0}
    paths = ["test_a.py", "test_b.py", "test_new.py", "reliability/test_c.py", "test_d.py"]
    # a file not listed yet counts as a usual one (UNLISTED_SECONDS): after the long ones, before the short ones
    assert file_order(paths, seconds) == ["test_b.py", "reliability/test_c.py", "test_new.py", "test_a.py",
                                          "test_d.py"]
    assert file_order(["test_x.py", "test_y.py"], {}) == ["test_x.py", "test_y.py"]
