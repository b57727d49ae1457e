"""What another process of the same user can read of the programs a run starts: /proc/<pid>/cmdline and environ.

A ChildSampler thread reads both for every process below the run, over and over while it goes, and counts the
canaries it finds there. Only the programs a module starts (helm, make, docker, credential helpers: a process with a
module's Python among its ancestors) are the collection's children. Ansible's own processes are skipped: the Python
interpreters (ansible-playbook, its workers, each module), the `/bin/sh -c` that starts a module, and the commands
ansible-playbook runs itself (mkdir, chmod, rm of its temporary directories). They hold the environment
ansible-playbook was started with, which the user gave it; what the collection controls is what it passes on.
Scanned are the programs started by this collection's modules and by ansible.builtin.command, whose argv and
environment its roles choose, and those of kubernetes.core.helm (the ingress_nginx role's installer: it runs helm with
the module's whole environment, and the role sets every variable outside helm's allow-list empty for that task).
The programs other modules start are listed apart in `others` (Ansible's own, such as `file --mime-type` run by
ansible.builtin.stat): the collection gives them no narrower environment.
Which module runs is the one the run's -vvv log last named ("Using module file ...") The agent_images role's trampoline,
`sh -c 'exec env -i NAME=... "$@"' sh PROGRAM ...` (one process that becomes sh, then env, then PROGRAM), is skipped
likewise while it is sh or env: for that moment it holds the environment of the command module that started it (one
of Ansible's Python processes, skipped too), and the program it becomes is sampled with its clean environment.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from conftest import descendants, process_parents

MODULE_FILE = re.compile(rb"Using module file (\S+)")
COMMAND_MODULE = b"/ansible/modules/command.py"
# Another collection's module whose children the collection's roles narrow (a task `environment:`), so they count.
NARROWED_MODULES = (b"/ansible_collections/kubernetes/core/plugins/modules/helm.py",)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:  # gone meanwhile
        return b""


def ansibles_own(exe: str, argv: list[str]) -> bool:
    """Ansible's own processes (and the env -i trampoline): see the module docstring."""
    name = os.path.basename(exe)
    if name.startswith("python") or name == "env":
        return True
    script = " ".join(argv[2:3])
    trampoline = "python" in script or "exec env -i " in script  # the registry role's gcloud one first sets "$@"
    return name in ("sh", "dash", "bash") and argv[1:2] == ["-c"] and trampoline


@dataclass
class Sampled:
    pid: int
    argv: list[str]
    cmdline: bytes = field(repr=False)
    environ: bytes = field(repr=False)

    @property
    def name(self) -> str:
        """`helm upgrade`, `make -C`: the program and its first argument."""
        return " ".join([os.path.basename(self.argv[0]) if self.argv else "?", *self.argv[1:2]])


def _is_module(argv: list[str], exe: str) -> bool:
    """A module's Python: an interpreter that is not ansible-playbook (or one of its forked workers)."""
    return os.path.basename(exe).startswith("python") and not any("ansible-playbook" in part for part in argv[:3])


def sample(root: int) -> list[Sampled]:
    """The processes below `root` that a module started (directly or not), apart from the env -i trampoline."""
    table, found = process_parents(), []
    exes: dict[int, tuple[str, list[str]]] = {}

    def describe(pid: int) -> tuple[str, list[str]]:
        if pid not in exes:
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                exe = ""
            exes[pid] = exe, [part.decode(errors="replace") for part in _read(f"/proc/{pid}/cmdline").split(b"\0")
                              if part]
        return exes[pid]

    for pid in descendants(root, table):
        exe, argv = describe(pid)
        if not exe or not argv or ansibles_own(exe, argv):
            continue
        ancestor, started_by_module = table.get(pid), False
        while ancestor and ancestor != root and not started_by_module:
            started_by_module = _is_module(*reversed(describe(ancestor)))
            ancestor = table.get(ancestor)
        if started_by_module:
            found.append(Sampled(pid, argv, _read(f"/proc/{pid}/cmdline"), _read(f"/proc/{pid}/environ")))
    return found


class ChildSampler(threading.Thread):
    """Samples the run's child processes every `every` seconds until halted; `hits`: canary -> place -> count
    (a place is `<program> cmdline` or `<program> environ`), `seen`: the programs it looked at, `others`: those
    started by another module (not scanned; kubernetes.core.helm's are scanned)."""

    def __init__(self, canaries: list[Any], log: Path, root: int | None = None, every: float = 0.05,
                 on_sample: Callable[[list[Sampled]], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.canaries, self.log, self.root, self.every = canaries, log, root or os.getpid(), every
        self.on_sample = on_sample
        self.halt = threading.Event()
        self.hits: dict[str, dict[str, int]] = {canary.name: {} for canary in canaries}
        self.seen: set[str] = set()
        self.others: set[str] = set()
        self._looked: set[tuple[int, bytes, int]] = set()
        self._module, self._offset = b"", 0

    def run(self) -> None:
        while not self.halt.is_set():
            self.sweep()
            self.halt.wait(self.every)

    def _current_module(self) -> bytes:
        """The module the run's log last said it runs."""
        try:
            with open(self.log, "rb") as handle:
                handle.seek(self._offset)
                text = handle.read()
        except OSError:
            return self._module
        self._offset += len(text)
        named = MODULE_FILE.findall(text)
        self._module = named[-1] if named else self._module
        return self._module

    def sweep(self) -> None:
        module = self._current_module()
        sampled = sample(self.root)
        if self._current_module() != module:  # a task started meanwhile: whose processes these are is not known
            return
        foreign = not (b"/ansible_collections/datarobot_mlops/" in module
                       or module.endswith((COMMAND_MODULE,) + NARROWED_MODULES))
        for process in sampled:
            if foreign:
                self.others.add(f"{process.name} ({module.decode(errors='replace').rsplit('/', 1)[-1]})")
                continue
            self.seen.add(process.name)
            key = (process.pid, process.cmdline, hash(process.environ))
            if key in self._looked:
                continue
            self._looked.add(key)
            for canary in self.canaries:
                for place, data in (("cmdline", process.cmdline), ("environ", process.environ)):
                    if hits := canary.hits(data, depth=1):
                        where = f"{process.name} {place}"
                        self.hits[canary.name][where] = self.hits[canary.name].get(where, 0) + hits
        if self.on_sample:
            self.on_sample(sampled)
