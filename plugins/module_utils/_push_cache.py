# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What earlier pushes learnt, so that a repeated push decides "nothing to do" without reading the archive.

Three facts are kept: which image an archive file holds, which blob a layer becomes under a given compressor,
and in which repositories of a registry a blob was stored (to mount it instead of uploading). Each is only a
hint, checked against the registry before it is used: a lost or stale cache costs time, never correctness.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._json_file import write_json

BLOB_PLACES = 5  # repositories remembered per blob, newest last


class PushCache:
    """What earlier runs learnt, in one small JSON file; losing it only costs time."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {"archives": {}, "layers": {}, "blobs": {}}
        if path and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    loaded = json.load(handle)
            except (OSError, ValueError):
                loaded = None  # a damaged cache is ignored and rewritten
            if isinstance(loaded, dict):  # a section of another shape too: as if it were not there
                self.data.update({name: section for name, section in loaded.items()
                                  if name in self.data and isinstance(section, dict)})
        self._lock = threading.Lock()

    @staticmethod
    def archive_key(path: str, source_image: str | None) -> str:
        """Names one version of one archive file: a rewritten file (size, mtime, inode) is a new key."""
        stat = os.stat(path)
        return f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{source_image or ''}"

    def remember_layer(self, diff_id: str, compression: str, digest: str, size: int) -> None:
        """The blob a layer became under the compressor named `compression`."""
        with self._lock:
            self.data["layers"][f"{diff_id}|{compression}"] = {"digest": digest, "size": size}

    def layer(self, diff_id: str, compression: str) -> dict[str, Any] | None:
        """{"digest", "size"} of the blob the layer became under that compressor, if known."""
        return self.data["layers"].get(f"{diff_id}|{compression}")

    def remember_blob(self, registry: str, repository: str, digest: str) -> None:
        """A repository of `registry` that held the blob (a mount source for later pushes)."""
        with self._lock:
            places = self.data["blobs"].setdefault(f"{registry}|{digest}", [])
            if repository not in places:
                places.append(repository)
                del places[:-BLOB_PLACES]

    def blob_places(self, registry: str, digest: str) -> list[str]:
        """Repositories that held the blob when last seen; they may have lost it since."""
        return list(self.data["blobs"].get(f"{registry}|{digest}", []))

    def save(self) -> None:
        """Write the file atomically (a crash leaves the old one)."""
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.path, self.data)


def default_cache_path() -> str:
    """The cache file used unless the caller names one: under XDG_CACHE_HOME or ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "datarobot_mlops", "pps_image.json")
