# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Writing a small JSON document that other processes read while it may change: whole or not at all."""

from __future__ import annotations

import json
import os
import threading
from typing import Any


def write_json(path: str, data: Any) -> None:
    """Write `data` to `path` at once: a 0600 temporary file (unique to this process and thread, never followed
    through a link) renamed over it, so a reader sees the old document or the new one, never half of one, and a crash
    leaves the old one."""
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(data, out, separators=(",", ":"), default=str)
    os.replace(temporary, path)
