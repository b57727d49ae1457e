# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How the watching action plugins (push_progress, build_progress) read a background job's files, and how
push_progress removes a job's directory once the job has ended.

Through the connection with `slurp` (and `file state=absent`), so a job on a remote host is watched the same way; or,
on the local connection without become (every inventory of the collection), directly: the files are then the
controller's own, and a module run per look (a Python start each, in every fork of a fleet) is saved.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from typing import Any, Callable

Read = Callable[[str], "str | None"]
Remove = Callable[[str], "str | None"]
Execute = Callable[..., dict[str, Any]]


def read_local(path: str) -> str | None:
    """A file's text on this host; None when it cannot be read (not written yet, removed, no such process)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def slurp_reader(execute: Execute) -> Read:
    """A reader that runs `ansible.builtin.slurp` through `execute` (the action's `_execute_module` with its
    task_vars bound); None when the file cannot be read."""
    def read(path: str) -> str | None:
        found = execute(module_name="ansible.legacy.slurp", module_args={"src": path})
        if found.get("failed") or "content" not in found:
            return None  # not written yet, already removed, or no such process
        return base64.b64decode(found["content"]).decode("utf-8", "replace")
    return read


def is_local(transport: str, become: bool) -> bool:
    """Whether the job's files can be read directly: the local connection, as the same user."""
    return transport == "local" and not become


def job_reader(transport: str, become: bool, execute: Execute) -> Read:
    """The reader for a job on this connection: `read_local` where `is_local`, else `slurp_reader(execute)`."""
    return read_local if is_local(transport, become) else slurp_reader(execute)


def remove_local(path: str, *, attempts: int = 3, pause: float = 0.1) -> str | None:
    """Remove the directory `path` and everything in it on this host: None once it is gone (or was already), else
    what stood in the way. A file that appears or goes while it is removed (a worker's last write) is tried again."""
    problem: OSError | None = None
    for attempt in range(attempts):
        if not os.path.lexists(path):
            return None
        try:
            shutil.rmtree(path)
            return None
        except OSError as exc:
            problem = exc
        if attempt + 1 < attempts:
            time.sleep(pause)
    return f"{path}: {problem.strerror or problem}" if problem else None


def file_remover(execute: Execute) -> Remove:
    """A remover that runs `ansible.legacy.file state=absent` through `execute`; None when it is gone, else why not."""
    def remove(path: str) -> str | None:
        done = execute(module_name="ansible.legacy.file", module_args={"path": path, "state": "absent"})
        return f"{path}: {done.get('msg') or 'the file module failed'}" if done.get("failed") else None
    return remove


def job_remover(transport: str, become: bool, execute: Execute) -> Remove:
    """The remover for a job's directory on this connection: `remove_local` where `is_local`, else `file_remover`."""
    return remove_local if is_local(transport, become) else file_remover(execute)
