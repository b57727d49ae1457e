# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The Ansible run a module runs under, found from /proc, so that a push going on in the background can stop when
the run that started it has ended (interrupted with Ctrl-C, cancelled, or failed before it collected the push).

On the local connection a module's ancestors are the run's task worker (a fork of the `ansible-playbook` process,
with its command line, gone once the task returns) and, above it, the run's own process, which lives as long as the
run. Through ssh the ancestors are sshd's: no run is found there and nothing is watched.
"""

from __future__ import annotations

import os
from typing import NamedTuple

ANSIBLE_COMMANDS = frozenset({"ansible-playbook", "ansible", "ansible-console", "ansible-pull"})
MAX_DEPTH = 64  # ancestors looked at, at most (a loop in a damaged /proc ends here)
ENDED_STATES = ("Z", "X", "x")  # a zombie, or dead: the process runs no more though /proc still shows it


class RunProcess(NamedTuple):
    """A process known by its pid and its start time (a pid alone may be taken by another process later)."""

    pid: int
    start: str


def stat_fields(text: str) -> "list[str] | None":
    """The fields of a /proc/<pid>/stat text after the command name (state first, parent pid, ..., start time at
    index 19), or None when the text is not one."""
    head, paren, rest = text.rpartition(")")  # the command name may hold spaces and parentheses
    fields = rest.split()
    if not head or not paren or len(fields) < 20:
        return None
    return fields


def read_stat(pid: int, proc: str = "/proc") -> "list[str] | None":
    """`stat_fields` of process `pid`, or None where there is no such process (or no /proc)."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8", errors="replace") as handle:
            return stat_fields(handle.read())
    except OSError:
        return None


def _stat(pid: int, proc: str) -> "tuple[int, str, str] | None":
    """(parent pid, start time in clock ticks, state) of `pid`, or None."""
    fields = read_stat(pid, proc)
    if fields is None or not fields[1].isdigit():
        return None
    return int(fields[1]), fields[19], fields[0]


def _command_line(pid: int, proc: str) -> "list[str] | None":
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            return handle.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return None


def _is_ansible(argv: "list[str] | None") -> bool:
    """Whether `argv` runs an Ansible command line tool (as `python .../ansible-playbook ...` or directly)."""
    return bool(argv) and any(os.path.basename(arg) in ANSIBLE_COMMANDS for arg in argv[:2])


def is_running(process: RunProcess, proc: str = "/proc") -> bool:
    """Whether `process` still runs (the same pid, started at the same time, not a zombie)."""
    stat = _stat(process.pid, proc)
    return stat is not None and stat[1] == process.start and stat[2] not in ENDED_STATES


def ansible_run(pid: "int | None" = None, proc: str = "/proc") -> "RunProcess | None":
    """The Ansible run process that `pid` (default: this process) runs under: the topmost of the nearest unbroken
    line of ancestors running one Ansible command line (the run forks its task workers with its own), or None."""
    stat = _stat(os.getpid() if pid is None else pid, proc)
    found: "tuple[RunProcess, list[str]] | None" = None
    for _depth in range(MAX_DEPTH):
        if stat is None or stat[0] <= 1:
            break
        parent = stat[0]
        stat = _stat(parent, proc)
        argv = _command_line(parent, proc)
        if stat is None:
            break
        if found is None and _is_ansible(argv):
            found = (RunProcess(parent, stat[1]), argv or [])
        elif found is not None:
            if argv != found[1]:
                break  # above the run: its shell, ansible-runner, molecule
            found = (RunProcess(parent, stat[1]), found[1])
    return found[0] if found else None
