# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The progress of a push that follows another push of the same archive (a fleet), in bytes of the archive.

A push counts its progress as it reads the archive (_push_progress). A follower reads none of it: it uploads the
blobs another push spools (_fleet_follow, _blob_spool). So it credits each layer it sends with the layer's share of
the archive, `member size * archive size / sum of the member sizes of the index` (a plain tar and a .tar.gz alike),
in proportion to the blob's bytes sent over the blob's size, and the whole share once the layer is sent. The rate and
the time left then follow the follower's own upload, as a reader's follow its reading.

Two numbers may not be known yet, and are estimated until they are:
- the blob's size, while its writer is still compressing it: the member's size times the ratio of blob bytes to
  member bytes of the layers whose blob size is known, or 0.5 before any; a layer not done is never credited more
  than `UNFINISHED` of its share;
- the sum of the member sizes, while the index is not complete (a .tar.gz pushed in one pass: the indexer is still
  reading it): the same ratio stands in for the archive's (gzip both).
Credits only ever grow (a share estimated too high holds the line until the exact one catches up), and never past
the archive's size: the push's end sets the progress done.
"""

from __future__ import annotations

import threading
from typing import Iterable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Member
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import PushProgress

GUESS = 0.5  # blob bytes per member byte before any blob's size is known
UNFINISHED = 0.99  # the most of its share a layer not done yet is credited


class LayerCredit:
    """One layer a follower sends: its member's size, the blob bytes sent, the blob's size once known."""

    def __init__(self, owner: "FollowProgress", size: int) -> None:
        self.owner, self.size = owner, size
        self.bytes_sent = 0
        self.blob_bytes: int | None = None
        self.finished = False

    def sent(self, count: int) -> None:
        """`count` more bytes of the blob sent."""
        self.owner.update(self, sent=count)

    def blob_size(self, size: int) -> None:
        """The blob is whole: `size` bytes (the spooled blob's facts)."""
        self.owner.update(self, blob=size)

    def done(self) -> None:
        """The layer is sent: its whole share."""
        self.owner.update(self, done=True)

    def credit(self, share_ratio: float, blob_ratio: float) -> float:
        """Archive bytes this layer is worth so far."""
        share = self.size * share_ratio
        if self.finished:
            return share
        blob = self.blob_bytes if self.blob_bytes is not None else max(self.size * blob_ratio, 1.0)
        return share * min(self.bytes_sent / blob if blob else 0.0, UNFINISHED)


class FollowProgress:
    """A follower's credits, told to its `PushProgress` as archive bytes done; shared by its sending threads."""

    def __init__(self, progress: PushProgress) -> None:
        self.progress = progress
        self.total = int(progress.state["bytes_total"])
        self._lock = threading.Lock()
        self._members_total = 0  # the index's member sizes summed, once it is complete
        self._layers: list[LayerCredit] = []
        self._known = [0, 0]  # member bytes and blob bytes of the layers whose blob size is known
        self._credited = 0

    def index(self, members: Iterable[Member]) -> None:
        """The archive's complete index: exact shares from now on (a link names its target's member: counted once)."""
        sizes = {member.offset: member.size for member in members}
        with self._lock:
            self._members_total = sum(sizes.values())
        self.update(None)

    def layer(self, member: Member) -> LayerCredit:
        """A layer about to be sent."""
        credit = LayerCredit(self, member.size)
        with self._lock:
            self._layers.append(credit)
        return credit

    def ratios(self) -> tuple[float, float]:
        """(archive bytes per member byte, blob bytes per member byte): exact or estimated. Under the lock."""
        members, blobs = self._known
        blob_ratio = blobs / members if members else GUESS
        if self._members_total and self.total:
            return self.total / self._members_total, blob_ratio
        return blob_ratio, blob_ratio

    def update(self, layer: LayerCredit | None, sent: int = 0, blob: int | None = None, done: bool = False) -> None:
        """Record what a layer did, and tell the progress the credits gained (never more than the archive)."""
        with self._lock:
            if layer is not None:
                layer.bytes_sent += sent
                if blob is not None and layer.blob_bytes is None:
                    layer.blob_bytes = blob
                    self._known[0] += layer.size
                    self._known[1] += blob
                layer.finished = layer.finished or done
            share_ratio, blob_ratio = self.ratios()
            credit = int(sum(item.credit(share_ratio, blob_ratio) for item in self._layers))
            if self.total:
                credit = min(credit, self.total)
            gained, self._credited = credit - self._credited, max(credit, self._credited)
        if gained > 0:
            self.progress.credit(gained)
