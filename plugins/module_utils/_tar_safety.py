# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The checks both tar readers make before trusting a member: one place for them.

The agent tarball (`_agent_tarball.py`, extracted to disk) and image archives
(`_image_archive.py`, read in place) refuse the same things: absolute names,
`..` components, devices and FIFOs, and links that lead outside the archive.
Each reader turns the reason into its own error and message.
"""

from __future__ import annotations

import re
import tarfile

MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit: a longer chain of symlinks is a loop
ABSOLUTE = "absolute"
PARENT = "parent"


def member_parts(name: str) -> list[str]:
    """A member name's path components, without empty and `.` parts."""
    return [part for part in name.split("/") if part not in ("", ".")]


def name_problem(name: str) -> str | None:
    """ABSOLUTE or PARENT when a member name would be written outside the extraction directory, else None."""
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or "\\" in name:
        return ABSOLUTE
    if ".." in member_parts(name):
        return PARENT
    return None


def is_special(member: tarfile.TarInfo) -> bool:
    """Devices, FIFOs and the like: nothing an agent tarball or an image archive carries."""
    return not (member.isreg() or member.isdir() or member.issym() or member.islnk())


def resolve_inside(parts: list[str], links: dict[str, str], hops: int = 0) -> list[str] | None:
    """Where a path inside the archive really leads, following the archive's own symlinks; None when outside."""
    resolved: list[str] = []
    for part in parts:
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get("/".join(resolved))
        if target is None:
            continue
        if hops >= MAX_LINK_HOPS or target.startswith("/"):
            return None
        resolved.pop()
        followed = resolve_inside(resolved + member_parts(target), links, hops + 1)
        if followed is None:
            return None
        resolved = followed
    return resolved
