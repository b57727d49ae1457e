# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which kubeconfig files client-go reads, and which entry it keeps when several files name one.

Shared by the exec-plugin check (_kubeconfig_exec), which leaves unreadable files to the kubernetes client, and by
helm's in-memory kubeconfig (_helm_env), which refuses them with a message: each reads the files its own way.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, TypeVar

Source = TypeVar("Source")


def listed_paths(listed: str, home: str) -> list[str]:
    """KUBECONFIG's files in order, the first of a repeated path only; without any, $HOME/.kube/config."""
    paths = listed.split(os.pathsep) if listed else [os.path.join(home, ".kube", "config")]
    return list(dict.fromkeys(path for path in paths if path))


def first_entry(loaded: Iterable[tuple[dict[str, Any], Source]], kind: str,
                name: Any) -> tuple[dict[str, Any], Source] | None:
    """The first `kind` (clusters, users, contexts) entry called `name` across the documents, with what came with its
    document (its path, say): the one client-go keeps."""
    for document, source in loaded:
        for item in document.get(kind) or []:
            if isinstance(item, dict) and item.get("name") == name:
                return item, source
    return None
