"""A clone of the repository stands on its own: `make demo` in a fresh clone, beside nothing, to an Available agent.

The test clones the repository's HEAD: committed work only (uncommitted changes of the working tree are not in the
clone; CI always runs on a committed checkout). The clone lies alone in a temporary folder, so no folder beside it
can be read. It gets its own .venv and its own rig (state in `<clone>/.rig`, its own loopback
ports picked by tests/rig/processes.py) and shares only `~/.cache` with the checkout: the rig's built binaries,
pip's cache and the agent tarball cache. Its rig is always brought down with `make rig-down`, and no process of it
may be left behind. Cold .venv: expect ~10 minutes in all.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ansible_cli import REPO

sys.path.insert(0, str(REPO / "tests" / "rig"))
from processes import port_open, start_time  # noqa: E402  the rig's own pid-file and port checks

MAKE_DEMO_TIMEOUT = 2400  # a cold .venv (~5 min) plus the whole demo run, with room on a loaded 2-core machine
NAMESPACE = "datarobot-mlops"  # the management_agent role's default, which the local inventory keeps
# Variables of a rig, a venv or a make run that the checkout's environment may carry and the clone must not see.
FOREIGN = ("KUBECONFIG", "K8S_AUTH_KUBECONFIG", "DOCKER_HOST", "HELM", "KUBECTL", "VIRTUAL_ENV", "PYTHONPATH",
           "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
FOREIGN_PREFIXES = ("RIG_", "DATAROBOT_", "ANSIBLE_", "MOLECULE_", "PYTEST_")
KEPT = ("RIG_BIN_CACHE",)  # where the built binaries are cached: shared on purpose


def clean_env() -> dict[str, str]:
    """This process's environment without the checkout's rig, venv and make settings (as a new shell has it)."""
    env = {key: value for key, value in os.environ.items()
           if key in KEPT or (key not in FOREIGN and not key.startswith(FOREIGN_PREFIXES))}
    ours = (str(REPO), os.environ.get("RIG_BIN", "\0"))
    env["PATH"] = os.pathsep.join(entry for entry in env.get("PATH", "").split(os.pathsep)
                                  if entry and not entry.startswith(ours))
    return env


def read_env(path: Path) -> dict[str, str]:
    """The `export KEY=value` lines of a rig's .rig/env."""
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            values[key] = shlex.split(value)[0] if value else ""
    return values


def rig_processes(state: Path) -> dict[int, str]:
    """pid -> start time of every daemon the clone's rig recorded (tests/rig/processes.py pid files)."""
    found = {}
    for pid_file in (state / "pids").glob("*.pid"):
        pid, started = pid_file.read_text().split()
        found[int(pid)] = started
    return found


def processes_touching(folder: Path) -> list[str]:
    """Live processes whose command line or working directory lies in `folder` (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(folder) in cmdline or cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append(f"{proc.name}: {cmdline[:200]} (cwd {cwd})")
    return found


def run_in_own_group(argv: list[str], *, cwd: Path, env: dict[str, str], stdout, timeout: float) -> int:
    """Run argv in a process group of its own; on timeout the whole group (make, ansible, helm) is killed.

    The rig's daemons run in sessions of their own (tests/rig/processes.py) and are left to `make rig-down`.
    """
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


@pytest.fixture
def lone_folder():
    """/tmp/fc-XXXX: short (podman's socket path must stay under 108 bytes) and holding nothing but the clone."""
    folder = Path(tempfile.mkdtemp(prefix="fc-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_make_demo_in_a_fresh_clone_reaches_an_available_agent(lone_folder, record_property):
    clone = lone_folder / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, capture_output=True, timeout=300)
    assert sorted(lone_folder.iterdir()) == [clone], "the clone must have no sibling folders"
    assert not (clone / ".venv").exists() and not (clone / ".rig").exists()
    env = clean_env()
    log = lone_folder / "make-demo.log"
    started = time.monotonic()
    try:
        with log.open("w") as out:
            returncode = run_in_own_group(["make", "demo"], cwd=clone, env=env, stdout=out, timeout=MAKE_DEMO_TIMEOUT)
        seconds = time.monotonic() - started
        record_property("make_demo_seconds", round(seconds))
        print(f"make demo in a fresh clone: {seconds:.0f} s")
        assert returncode == 0, f"make demo failed after {seconds:.0f} s:\n{log.read_text()[-6000:]}"

        rig = read_env(clone / ".rig" / "env")
        assert rig["RIG_DIR"] == str(clone / ".rig")
        assert Path(rig["RIG_INGRESS_NGINX_CHART"]).is_file()
        assert Path(rig["RIG_INGRESS_NGINX_CHART"]).is_relative_to(clone)
        assert Path(rig["KUBECONFIG"]).is_relative_to(clone)
        kubectl = [rig["KUBECTL"], "--kubeconfig", rig["KUBECONFIG"], "-n", NAMESPACE]
        got = subprocess.run([*kubectl, "get", "deployments", "-l", "app.kubernetes.io/component=management-agent",
                              "-o", "json"], capture_output=True, text=True, check=True, timeout=60)
        agents = json.loads(got.stdout)["items"]
        assert len(agents) == 1, [d["metadata"]["name"] for d in agents]
        conditions = {c["type"]: c["status"] for c in agents[0]["status"].get("conditions", [])}
        assert conditions.get("Available") == "True", agents[0]["status"]
        assert agents[0]["status"].get("availableReplicas", 0) >= 1
    finally:
        state = clone / ".rig"
        recorded = rig_processes(state) if state.is_dir() else {}
        ports = json.loads((state / "ports.json").read_text()) if (state / "ports.json").exists() else {}
        down = subprocess.run(["make", "rig-down"], cwd=clone, env=env, capture_output=True, text=True, check=False,
                              timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert recorded, "the clone's rig recorded no process"
    alive = [pid for pid, started_at in recorded.items() if start_time(pid) == started_at]
    assert not alive, f"rig processes of the clone still running after rig-down: {alive}"
    assert not processes_touching(clone), processes_touching(clone)
    listening = {name: port for name, port in ports.items() if port_open(port)}
    assert not listening, f"the clone's rig ports still answer: {listening}"
