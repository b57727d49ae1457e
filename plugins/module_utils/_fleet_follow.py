# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A push that follows another push of the same archive (a fleet): the archive's index and layers from the spool.

Part of DirectPusher (_image_push), kept apart for size: the pusher decides whether it indexes the archive itself
(the first push, reading it) or follows the push that does (_spool_index), and these methods do the following.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._follow_progress import FollowProgress
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import (
    Archive,
    Layer,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._spool_index import (
    IndexLost,
    SpoolIndex,
)

FOLLOWERS = 2  # more layers followed at a time than the indexer sends: following waits, it does not compute


class FleetFollowing:
    """DirectPusher's following of a spooled index; `_index` is None without a spool."""

    _index: SpoolIndex | None = None
    _followed = False
    _follow_progress: FollowProgress | None = None  # a follower's progress: each layer's share of the archive

    def _indexed_archive(self: Any, archive_path: str) -> Archive:
        """The archive's index: from the spool when another push publishes it, else from a scan (then spooled)."""
        if self._index is not None and not self._index.claim():
            try:
                archive = self._index.load(archive_path, self.phases)
                self._followed = True  # layers come from the spool: _start_each reads no archive
                self._follow_progress = FollowProgress(self.progress)
                self._follow_progress.index(archive.members.values())
                return archive
            except IndexLost:
                self._index.claim()  # its indexer failed: this push reads the archive, and may index it for others
        archive = Archive.scan(archive_path, phases=self.phases)
        if self._index is not None:
            self._index.publish(archive)
        return archive

    def _follow_index(self: Any, archive_path: str) -> "tuple[Archive, dict[str, Any]] | None":
        """Start each layer's upload from the spool as the indexer announces it; the archive and the open uploads
        by member name, once the index is complete. None when the indexer failed (nothing started is kept)."""
        futures: dict[str, Future] = {}
        self.progress.phase("sending")
        self._follow_progress = FollowProgress(self.progress)  # shares estimated until the index is complete
        try:
            with ThreadPoolExecutor(max_workers=self.layer_readers + FOLLOWERS, thread_name_prefix="follow") as pool:
                try:
                    for member in self._index.members():
                        layer = Layer(member, diff_id="", compressed=member.compressed)
                        futures[member.name] = pool.submit(self._send_unverified, layer, None)
                except IndexLost:
                    self._spooling.abandoned = True  # layers still waiting for the indexer stop now
                    raise
            archive = self._index.load(archive_path, self.phases)
            self._follow_progress.index(archive.members.values())
            return archive, {name: future.result() for name, future in futures.items()}
        except IndexLost:
            self._follow_progress = None  # this push reads the archive now: its reads count
            self._cancel_sent(futures.values())
            self._spooling.abandoned = False
            self._index.claim()
            return None
        except BaseException:
            self._cancel_sent(futures.values())
            raise
