# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The DataRobot MLOps agent tarball, unpacked once into a cache, safely.

`datarobot-mlops-agent-<version>.tar.gz` carries, under one top directory, the
`tools/` the procedure needs: the management agent chart and the image Makefiles.
This unpacks it into `<cache>/<sha256[:16]>/` only when that directory does not
hold it yet, after checking every member name and link target first: nothing is
written when the archive is unsafe, truncated or not the agent tarball.

Why not ansible.builtin.unarchive: for tar it hands safety to the tar binary
(GNU tar drops a leading `/` and skips `..` members, but writes symlinks that
point anywhere as they are), and it re-reads the whole archive with `tar --diff`
on every run to decide `changed`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._tar_safety import (
    ABSOLUTE,
    PARENT,
    is_special,
    member_parts as _parts,
    name_problem,
    resolve_inside,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

CHART_SUBPATH = "tools/charts/datarobot-management-agent"
MARKER = ".datarobot_mlops_extracted"
_CHART_KEY = re.compile(r"^(version|appVersion):[ \t]*['\"]?([^'\"#\s]+)['\"]?", re.MULTILINE)


# How the messages name what to change: the agent_tarball module's option, and the agent_tarball role's variable
# that sets it.
SRC = "src (the agent_tarball role: mlops_agent_tarball)"
PATH = "path (the agent_tarball role: mlops_agent_tarball_dir)"
CACHE_DIR = "cache_dir (the agent_tarball role: mlops_agent_tarball_cache_dir)"


class TarballError(MlopsError):
    """The tarball or directory cannot be used; the message says why and what to do."""


@dataclass
class AgentTree:
    path: str            # the directory holding tools/
    chart_path: str      # <path>/tools/charts/datarobot-management-agent
    chart_version: str
    app_version: str
    checksum: str = ""   # sha256:<hex> of the tarball ("" for a directory given as is)
    changed: bool = False


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def chart_versions(chart_path: str, origin: str = "") -> tuple[str, str]:
    """(version, appVersion) from Chart.yaml's top-level keys; "" when absent. `origin` names the file for messages
    (the tarball's member it was unpacked from), else its path."""
    try:
        with open(os.path.join(chart_path, "Chart.yaml"), encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise TarballError(f"Cannot read {chart_path}/Chart.yaml: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TarballError(f"{origin or os.path.join(chart_path, 'Chart.yaml')} is not UTF-8 text (byte {exc.start}), "
                           "which a chart's Chart.yaml is: get the tarball again from DataRobot and compare its "
                           "checksum.") from exc
    found = dict(_CHART_KEY.findall(text))
    return found.get("version", ""), found.get("appVersion", "")


def _tree(path: str, checksum: str = "", changed: bool = False, origin: str = "") -> AgentTree:
    chart = os.path.join(path, CHART_SUBPATH)
    version, app_version = chart_versions(chart, origin)
    return AgentTree(path, chart, version, app_version, checksum, changed)


def _chart_member(source: str, top: str) -> str:
    """Chart.yaml as a member of the tarball, for messages."""
    return f"Chart.yaml of agent tarball {source} (member {'/'.join(filter(None, (top, CHART_SUBPATH)))}/Chart.yaml)"


def find_tree(directory: str) -> AgentTree:
    """The agent tree in an already extracted directory: the directory itself or its one top directory."""
    if not os.path.isdir(directory):
        raise TarballError(f"path {directory} is not a directory. Give as path the directory the agent tarball was "
                           "extracted into, or the tarball itself as src (the agent_tarball role: "
                           "mlops_agent_tarball_dir, or mlops_agent_tarball).")
    candidates = [directory] + sorted(os.path.join(directory, entry) for entry in os.listdir(directory)
                                      if os.path.isdir(os.path.join(directory, entry)))
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, CHART_SUBPATH, "Chart.yaml")):
            return _tree(os.path.abspath(candidate))
    raise TarballError(f"{directory} holds no {CHART_SUBPATH}/Chart.yaml (looked in it and in its subdirectories). "
                       "Is it the extracted DataRobot MLOps agent tarball (datarobot-mlops-agent-<version>.tar.gz)?")


# --- checking an archive before anything is written -----------------------------------------------------------

def check_members(members: list[tarfile.TarInfo], source: str) -> None:
    """Refuse absolute names, `..`, devices, and links that lead out of the extraction directory."""
    links = {"/".join(_parts(m.name)): m.linkname for m in members if m.issym()}
    names = {"/".join(_parts(m.name)) for m in members}

    def refuse(member: tarfile.TarInfo, why: str) -> TarballError:
        return TarballError(f"Refusing agent tarball {source}: member {member.name!r} {why}. Nothing was extracted; "
                            "get the tarball again from DataRobot and compare its checksum.")

    for member in members:
        problem = name_problem(member.name)
        if problem == ABSOLUTE:
            raise refuse(member, "has an absolute path")
        if problem == PARENT:
            raise refuse(member, "has a '..' component and would be written outside the extraction directory")
        parts = _parts(member.name)
        if is_special(member):
            raise refuse(member, "is a device, FIFO or another special file")
        # A member below a symlink would be written wherever that link points.
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                raise refuse(member, "lies below a symbolic link member")
        if member.issym():
            if member.linkname.startswith("/"):
                raise refuse(member, f"is a symbolic link to the absolute path {member.linkname!r}")
            if resolve_inside(parts[:-1] + _parts(member.linkname), links) is None:
                raise refuse(member, f"is a symbolic link to {member.linkname!r}, outside the extraction directory")
        if member.islnk():
            target = _parts(member.linkname)
            if member.linkname.startswith("/") or ".." in target or "/".join(target) not in names:
                raise refuse(member, f"is a hard link to {member.linkname!r}, which is not a file of the archive")


def _top_of(members: list[tarfile.TarInfo], source: str) -> str:
    """The archive path holding tools/ (\"\" when tools/ is at the root)."""
    wanted = _parts(CHART_SUBPATH) + ["Chart.yaml"]
    tops = sorted((len(parts), "/".join(parts[:-len(wanted)])) for parts in (_parts(m.name) for m in members
                                                                             if m.isreg())
                  if parts[-len(wanted):] == wanted and len(parts) <= len(wanted) + 1)
    if not tops:
        raise TarballError(f"{source} has no {CHART_SUBPATH}/Chart.yaml: is it the DataRobot MLOps agent tarball "
                           "(datarobot-mlops-agent-<version>.tar.gz), not the PPS image or another download?")
    return tops[0][1]


def _read_members(tar: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    try:
        return tar.getmembers()  # reads to the end: a truncated download fails here, before anything is written
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise TarballError(f"Agent tarball {source} is not a readable tar archive (truncated or corrupt download?): "
                           f"{exc}. Download it again and compare its checksum with the one DataRobot gives.") from exc


def _open(source: str) -> tarfile.TarFile:
    try:
        return tarfile.open(source, "r:*")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise TarballError(f"Agent tarball {source} is not a tar archive (.tar or .tar.gz; truncated or corrupt "
                           f"download?): {exc}") from exc


def _extract_all(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: str) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.12, and security releases of 3.8 - 3.11: a second guard
        tar.extractall(dest, members=members, **{"filter": "data"})
        return
    for member in members:  # checked by check_members; drop owner and special mode bits as the data filter does
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        member.mode &= 0o755
        if member.isreg():
            member.mode |= 0o600
    tar.extractall(dest, members=members)  # nosec: every member was checked by check_members


def _marked(directory: str, checksum: str) -> str | None:
    """The top path recorded by a complete earlier extraction of this tarball, if any."""
    try:
        with open(os.path.join(directory, MARKER), encoding="utf-8") as handle:
            recorded, _sep, top = handle.read().strip().partition("\n")
    except OSError:
        return None
    return top if recorded == checksum else None


def _remove(path: str) -> None:
    """rmtree, also through directories the archive made read-only (never following a link)."""
    if not os.path.islink(path) and os.path.isdir(path):
        for root, dirs, _files in os.walk(path):
            for entry in dirs:
                full = os.path.join(root, entry)
                if not os.path.islink(full):
                    os.chmod(full, stat.S_IRWXU)
        os.chmod(path, stat.S_IRWXU)
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def extract(source: str, cache_dir: str, check_mode: bool = False) -> AgentTree:
    """Unpack `source` into `<cache_dir>/<sha256[:16]>` unless it is there already."""
    if not os.path.exists(source):
        raise TarballError(f"Agent tarball {source} does not exist. Download datarobot-mlops-agent-<version>.tar.gz "
                           f"from DataRobot (Developer Tools) and give its path as {SRC}.")
    if not os.path.isfile(source):
        raise TarballError(f"Agent tarball {source} is not a file. Give a directory the tarball was extracted into "
                           f"as {PATH} instead.")
    try:
        checksum = sha256_file(source)
    except OSError as exc:
        raise TarballError(f"Cannot read agent tarball {source}: {exc.strerror or exc}") from exc
    dest = os.path.join(cache_dir, checksum[:16])
    top = _marked(dest, checksum)
    if top is not None and os.path.isfile(os.path.join(dest, top, CHART_SUBPATH, "Chart.yaml")):
        return _tree(os.path.normpath(os.path.join(dest, top)), f"sha256:{checksum}", origin=_chart_member(source, top))

    with _open(source) as tar:
        members = _read_members(tar, source)
        check_members(members, source)
        top = _top_of(members, source)
        if check_mode:
            chart = os.path.join(dest, top, CHART_SUBPATH)
            return AgentTree(os.path.normpath(os.path.join(dest, top)), os.path.normpath(chart), "", "",
                             f"sha256:{checksum}", True)
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{checksum[:16]}.", dir=cache_dir)
        try:
            _extract_all(tar, members, work)
            with open(os.path.join(work, MARKER), "w", encoding="utf-8") as handle:
                handle.write(f"{checksum}\n{top}\n")
            os.chmod(work, 0o755)  # mkdtemp made it 0700; the cache entry is as readable as the tarball's files
            if _marked(dest, checksum) is not None:  # another host's run finished first: use its tree
                _remove(work)
            else:
                if os.path.lexists(dest):  # an unfinished or foreign directory under our name
                    _remove(dest)
                try:
                    os.rename(work, dest)  # atomic: a complete tree or none, also with several hosts in parallel
                except OSError:
                    if _marked(dest, checksum) is None:
                        raise
                    _remove(work)
        except tarfile.TarError as exc:  # the data filter's second opinion (FilterError), or a read error
            _remove(work)
            raise TarballError(f"Refusing agent tarball {source}: {exc}. Nothing was left in the cache.") from exc
        except BaseException:
            if os.path.lexists(work):
                _remove(work)
            raise
    return _tree(os.path.normpath(os.path.join(dest, top)), f"sha256:{checksum}", True, _chart_member(source, top))


def agent_tree(src: str | None, path: str | None, cache_dir: str, check_mode: bool) -> AgentTree:
    """The tree `path` names as it is, else `src` unpacked into `cache_dir`; a filesystem failure is a TarballError
    that names the option (and the role's variable) to change."""
    if path:
        try:
            return find_tree(path)
        except OSError as exc:
            raise TarballError(f"Cannot read the extracted agent tarball in {path}: {exc.strerror or exc}. Give a "
                               f"directory this user can read as {PATH}.") from exc
    try:
        return extract(src or "", os.path.abspath(cache_dir), check_mode)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise TarballError(f"Cannot unpack the agent tarball into {cache_dir}: {exc.strerror or exc}{where}. Give a "
                           f"directory this user can write as {CACHE_DIR}.") from exc


def unpack(src: str | None, path: str | None, cache_dir: str, check_mode: bool) -> dict:
    """The agent_tarball module's return values."""
    tree = agent_tree(src, path, cache_dir, check_mode)
    return dict(changed=tree.changed, path=tree.path, chart_path=tree.chart_path, chart_version=tree.chart_version,
                app_version=tree.app_version, checksum=tree.checksum)
