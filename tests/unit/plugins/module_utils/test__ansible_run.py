from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._ansible_run import (
    RunProcess,
    ansible_run,
    is_running,
)

PLAYBOOK = ["/venv/bin/python3", "/venv/bin/ansible-playbook", "-i", "inventories/local", "site.yml"]


def fake_proc(root: Path, processes: dict[int, tuple[int, list[str], str]]) -> str:
    """A /proc of `processes`: pid -> (parent pid, argv, state)."""
    for pid, (parent, argv, state) in processes.items():
        folder = root / str(pid)
        folder.mkdir(parents=True)
        rest = " ".join([state, str(parent)] + ["0"] * 17 + [f"{pid}000"] + ["0"] * 5)
        (folder / "stat").write_text(f"{pid} (odd (name) x) {rest}\n")
        (folder / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    return str(root)


def test_the_run_is_the_topmost_process_of_the_ansible_line_above_the_module(tmp_path):
    proc = fake_proc(tmp_path, {
        100: (90, ["/usr/bin/python3"], "R"),  # the module, pipelined
        90: (80, ["/bin/sh", "-c", "python3 && sleep 0"], "S"),
        80: (70, PLAYBOOK, "S"),  # the task's worker: a fork of the run, with its command line
        70: (60, PLAYBOOK, "S"),  # the run
        60: (1, ["/bin/bash"], "S"),
    })
    assert ansible_run(100, proc) == RunProcess(70, "70000")


def test_a_run_under_ansible_runner_or_started_directly_is_found_too(tmp_path):
    proc = fake_proc(tmp_path, {
        100: (80, ["/usr/bin/python3"], "R"),
        80: (70, ["/usr/local/bin/ansible-playbook", "site.yml"], "S"),
        70: (60, ["/usr/local/bin/ansible-playbook", "site.yml"], "S"),
        60: (1, ["/usr/bin/python3", "/usr/local/bin/ansible-runner", "worker"], "S"),
    })
    assert ansible_run(100, proc) == RunProcess(70, "70000")


def test_no_run_above_a_module_reached_through_ssh_or_called_directly(tmp_path):
    proc = fake_proc(tmp_path, {
        100: (90, ["/usr/bin/python3"], "R"),
        90: (80, ["/bin/sh", "-c", "python3"], "S"),
        80: (1, ["sshd: deploy@notty"], "S"),
    })
    assert ansible_run(100, proc) is None
    assert ansible_run(12345, proc) is None  # no such process


def test_a_run_that_ended_or_whose_pid_was_taken_is_not_running(tmp_path):
    proc = fake_proc(tmp_path, {70: (1, PLAYBOOK, "S"), 71: (1, PLAYBOOK, "Z")})
    assert is_running(RunProcess(70, "70000"), proc)
    assert not is_running(RunProcess(70, "69999"), proc)  # another process under the same pid
    assert not is_running(RunProcess(71, "71000"), proc)  # a zombie has ended
    assert not is_running(RunProcess(72, "72000"), proc)


def test_this_process_is_found_under_a_real_ansible_playbook_line(tmp_path):
    """Through the real /proc: a child of a process whose command line names ansible-playbook."""
    script = tmp_path / "ansible-playbook"
    script.write_text(
        "import os, subprocess, sys\n"
        "code = 'from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._ansible_run import "
        "ansible_run; print(ansible_run())'\n"
        "print(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip())\n"
        "print(os.getpid())\n")
    lines = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split("\n")
    assert lines[0].startswith(f"RunProcess(pid={lines[1]}, ")
