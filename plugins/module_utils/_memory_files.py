# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Files that live in memory only (Linux memfd): for credentials that a program insists on reading from a path.

A file in the temporary directory is removed at exit, but a run killed with SIGKILL (a cancelled AWX job, a lost
runner) never exits: the file stays, holding the credential. An in-memory file vanishes with the last process that
holds it, whatever ends that process. Two users here: the kubeconfig given to helm as a dictionary (_helm_env), and
the certificate and key data of a kubeconfig, which the kubernetes Python client otherwise writes into temporary
files for its TLS connection (`keep_kube_credentials_in_memory`).
"""

from __future__ import annotations

import os
from typing import Any, Callable

AVAILABLE = hasattr(os, "memfd_create")


def memory_file(name: str, content: bytes) -> int:
    """A descriptor of an in-memory file holding `content`; other code in this process reads it as
    /proc/self/fd/<fd>, a child given it with pass_fds as /dev/fd/<fd>. Only where AVAILABLE (Linux)."""
    fd = os.memfd_create(name)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]
    return fd


def _in_memory(files: dict[str, str]) -> Callable[..., str]:
    def create(content: Any, temp_file_path: str | None = None, force_recreate: bool = False) -> str:
        """The kubernetes client's `_create_temp_file_with_content`, with memory instead of a temporary file."""
        key = str(content)
        if force_recreate or key not in files:
            data = content.encode() if isinstance(content, str) else bytes(content)
            files[key] = f"/proc/self/fd/{memory_file('kube-credential', data)}"
        return files[key]

    create.in_memory = True  # type: ignore[attr-defined]
    return create


def keep_kube_credentials_in_memory() -> bool:
    """Make the kubernetes client keep a kubeconfig's inline certificates and keys (client-key-data...) in memory
    files of this process instead of temporary files. Its private helper is the one place it writes them; when the
    client has no such helper or the system no memfd, nothing changes (False)."""
    try:
        from kubernetes.config import kube_config  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    current = getattr(kube_config, "_create_temp_file_with_content", None)
    if not AVAILABLE or current is None:
        return False
    if not getattr(current, "in_memory", False):
        kube_config._create_temp_file_with_content = _in_memory({})  # pylint: disable=protected-access
    return True
