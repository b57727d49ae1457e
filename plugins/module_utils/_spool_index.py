# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The archive's index in the spool: what a push learns by reading the archive, published for the pushes beside it.

Before a push can upload anything it must know the archive: where each member is, and its manifest and config. For
a multi-GB .tar.gz that means decompressing all of it. In a fleet every fork would do that; with this index only the
first one does:

- the first push of an archive to take `index.lock` (fcntl) is the indexer: as its scan passes a layer it appends the
  member (name, offset, size, first bytes) to `members.jsonl`, and once the scan is over it writes the whole index
  (every member, the small JSON documents: manifests, configs) to `index.json` (temporary file, then rename). It
  holds the lock until its push ends, so the others know it may still spool a layer;
- every other push follows: it starts each announced layer's upload from the spool as soon as the indexer
  announces it (the layer's blob is then being written, or soon will be), and takes the image from `index.json`.
  It reads no byte of the archive. If the indexer lets go without an `index.json` (it failed or died), the
  follower cancels what it started and reads the archive itself.

What a follower takes on trust is what the spool directory (private, 0700) holds; it still checks every layer as a
reader of the archive would: the blob's bytes against the digest its facts name, the facts' source digest against
the layer's diff_id in the config, and the config against its digest in the manifest.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import deque
from typing import IO, Iterator

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import (
    POLL,
    SpoolSession,
    held,
    take,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._json_file import write_json
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Archive, Member
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_stats import Phases

FORMAT = 1


class IndexLost(MlopsError):
    """The push that was indexing the archive let go without publishing the index: read the archive here."""


class SpoolIndex:
    """One push's side of an archive's spooled index: the indexer's (`claim()` True) or a follower's."""

    def __init__(self, session: SpoolSession) -> None:
        self.session = session
        base = os.path.join(session.directory, "index")
        self.lock_path, self.index_path, self.members_path = base + ".lock", base + ".json", base + ".members.jsonl"
        self._descriptor: int | None = None
        self._out: IO[str] | None = None

    @property
    def claimed(self) -> bool:
        return self._descriptor is not None

    def claim(self) -> bool:
        """Become the indexer unless another push is (or was) one; a follower waits for the indexer's layers."""
        if not self.claimed and not os.path.exists(self.index_path):
            descriptor = take(self.lock_path)
            if descriptor is not None and os.path.exists(self.index_path):
                os.close(descriptor)  # it was published just now
            elif descriptor is not None:
                self._descriptor = descriptor
                self._out = open(self.members_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
        self.session.producer_alive = (lambda: False) if self.claimed else self.writing
        return self.claimed

    def writing(self) -> bool:
        """Whether an indexer holds the index (and may still spool layers)."""
        return held(self.lock_path)

    # --- the indexer -----------------------------------------------------------------------------------------

    def announce(self, member: Member) -> None:
        """Tell the followers a layer is coming (its upload can start from the spool now)."""
        if self._out is not None:
            self._out.write(json.dumps(_member(member)) + "\n")
            self._out.flush()

    def publish(self, archive: Archive) -> None:
        """Write the whole index (temporary file, then rename): the followers need nothing else of the archive."""
        if not self.claimed or os.path.exists(self.index_path):
            return
        document = {
            "format": FORMAT, "gzipped": archive.gzipped, "order": archive.order, "held": archive.held,
            "members": {name: _member(member) for name, member in archive.members.items()},
            "documents": {name: base64.b64encode(data).decode("ascii") for name, data in archive.documents.items()},
        }
        write_json(self.index_path, document)

    def release(self) -> None:
        """Let go of the index (the push is over, or failed): followers stop waiting for this push's layers."""
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    # --- a follower ------------------------------------------------------------------------------------------

    def members(self) -> Iterator[Member]:
        """The layers the indexer announces, as it announces them, until its index is complete.

        Raises IndexLost when the indexer lets go without publishing the index.
        """
        position, pending = 0, b""
        while True:
            complete = os.path.exists(self.index_path)  # looked at first: when it is there, every line is written
            alive = complete or self.writing()
            data = _read_from(self.members_path, position)
            position += len(data)
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                try:
                    member = _to_member(json.loads(line))
                except (ValueError, TypeError) as exc:  # another indexer took over and started the file again
                    raise IndexLost(f"the spooled member list is damaged ({exc})") from exc
                yield member
            if complete:
                return
            if not alive and not os.path.exists(self.index_path):
                raise IndexLost("the push indexing the archive stopped before it published the index")
            if not data:
                time.sleep(POLL)

    def load(self, path: str, phases: Phases | None = None) -> Archive:
        """The archive as the indexer's scan saw it, once the index is complete; IndexLost if it never will be."""
        deque(self.members(), maxlen=0)  # until the index is complete
        try:
            with open(self.index_path, encoding="utf-8") as handle:
                document = json.load(handle)
            if document.get("format") != FORMAT:
                raise ValueError("another format")
            members = {name: _to_member(fields) for name, fields in document["members"].items()}
            documents = {name: base64.b64decode(text) for name, text in document["documents"].items()}
            return Archive(path, bool(document["gzipped"]), members, documents, list(document["order"]),
                           held=int(document["held"]), phases=phases)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IndexLost(f"the spooled index cannot be read ({exc})") from exc


def _member(member: Member) -> list:
    return [member.name, member.offset, member.size, member.head.hex()]


def _to_member(fields: list) -> Member:
    name, offset, size, head = fields
    return Member(str(name), int(offset), int(size), bytes.fromhex(head))


def _read_from(path: str, position: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(position)
            return handle.read()
    except FileNotFoundError:
        return b""
