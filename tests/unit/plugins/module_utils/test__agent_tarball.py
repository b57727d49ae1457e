"""The agent tarball is checked member by member before anything is written, and unpacked once."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._agent_tarball import (
    CHART_SUBPATH,
    TarballError,
    agent_tree,
    extract,
    find_tree,
)
from fixtures.agent_tarball import build_agent_tarball

TOP = "datarobot-mlops-agent-9.2.0"
CHART_YAML = b"apiVersion: v2\nname: datarobot-management-agent\nversion: 1.2.0\nappVersion: \"9.2.0\"\n"


def write_tar(path: Path, members: list[tuple[str, object]], compress: bool = True) -> Path:
    """members: (name, bytes | ("dir",) | ("symlink", target) | ("hardlink", target) | ("fifo",))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            if isinstance(content, bytes):
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
                continue
            kind = content[0]
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = content[1]
            tar.addfile(info)
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def agent_members(*extra: tuple[str, object]) -> list[tuple[str, object]]:
    return [(TOP, ("dir",)), (f"{TOP}/tools/{CHART_SUBPATH[6:]}/Chart.yaml", CHART_YAML),
            (f"{TOP}/tools/bosun_docker/Makefile", b"push:\n\ttrue\n"), *extra]


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_fixture_tarball_unpacks_once_and_reports_the_chart(tmp_path):
    tarball = build_agent_tarball(tmp_path / "in", "9.3.1")
    cache = tmp_path / "cache"
    first = extract(str(tarball), str(cache))
    assert first.changed
    assert first.path.endswith("/datarobot-mlops-agent-9.3.1")
    assert first.chart_path == os.path.join(first.path, CHART_SUBPATH)
    assert (first.chart_version, first.app_version) == ("1.2.0", "9.3.1")
    assert first.checksum.startswith("sha256:") and Path(first.path).parent.name == first.checksum[7:23]
    assert os.path.isfile(os.path.join(first.path, "tools", "bosun_docker", "Makefile"))
    again = extract(str(tarball), str(cache))
    assert not again.changed and again.path == first.path
    assert cache_entries(cache) == [first.checksum[7:23]]  # no temporary directories left


def test_check_mode_writes_nothing(tmp_path):
    tarball = build_agent_tarball(tmp_path / "in")
    planned = extract(str(tarball), str(tmp_path / "cache"), check_mode=True)
    assert planned.changed and planned.chart_path.endswith(CHART_SUBPATH)
    assert not (tmp_path / "cache").exists()


def test_tools_at_the_archive_root(tmp_path):
    members = [(name[len(TOP) + 1:], content) for name, content in agent_members()[1:]]
    tree = extract(str(write_tar(tmp_path / "flat.tar", members, compress=False)), str(tmp_path / "cache"))
    assert tree.path == str(tmp_path / "cache" / tree.checksum[7:23])


def test_internal_symlinks_are_fine(tmp_path):
    tarball = write_tar(tmp_path / "ok.tar.gz", agent_members(
        (f"{TOP}/tools/lib", ("dir",)), (f"{TOP}/tools/lib/agent-9.2.0.jar", b"jar"),
        (f"{TOP}/tools/lib/agent.jar", ("symlink", "agent-9.2.0.jar")),
        (f"{TOP}/tools/bin", ("symlink", "../tools/lib")),
        (f"{TOP}/tools/copy.jar", ("hardlink", f"{TOP}/tools/lib/agent-9.2.0.jar"))))
    tree = extract(str(tarball), str(tmp_path / "cache"))
    assert Path(tree.path, "tools", "lib", "agent.jar").read_bytes() == b"jar"
    assert Path(tree.path, "tools", "copy.jar").read_bytes() == b"jar"


@pytest.mark.parametrize("member, why", [
    (("../evil", b"x"), "'..' component"),
    ((f"{TOP}/../../evil", b"x"), "'..' component"),
    (("/etc/evil", b"x"), "absolute path"),
    ((f"{TOP}/tools/out", ("symlink", "/etc")), "absolute path '/etc'"),
    ((f"{TOP}/tools/out", ("symlink", "../../..")), "outside the extraction directory"),
    ((f"{TOP}/tools/fifo", ("fifo",)), "is a device, FIFO or another special file"),  # ours, not tarfile's
    ((f"{TOP}/tools/hard", ("hardlink", "/etc/passwd")), "hard link"),
], ids=["dotdot", "nested-dotdot", "absolute", "abs-symlink", "symlink-out", "fifo", "hardlink-out"])
@pytest.mark.parametrize("data_filter", [True, False], ids=["with-data-filter", "without-data-filter"])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, monkeypatch, member, why, data_filter):
    """The collection's own check refuses each member, with its own message, whether or not Python's tarfile has
    the data filter (older Pythons take the manual extraction path, where that check is the only guard)."""
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    tarball = write_tar(tmp_path / "evil.tar.gz", agent_members(member))
    with pytest.raises(TarballError, match="Refusing agent tarball") as error:
        extract(str(tarball), str(tmp_path / "cache"))
    assert why in str(error.value)
    assert cache_entries(tmp_path / "cache") == []
    assert not (tmp_path / "evil").exists()


def test_symlink_chains_are_followed(tmp_path):
    # Each link alone looks inside; together `b` leads to the parent of the extraction directory.
    chain = agent_members((f"{TOP}/a", ("symlink", "..")), (f"{TOP}/b", ("symlink", "a/..")))
    with pytest.raises(TarballError, match="outside the extraction directory"):
        extract(str(write_tar(tmp_path / "chain.tar.gz", chain)), str(tmp_path / "cache"))
    below = agent_members((f"{TOP}/link", ("symlink", "tools")), (f"{TOP}/link/x", b"x"))
    with pytest.raises(TarballError, match="below a symbolic link"):
        extract(str(write_tar(tmp_path / "below.tar.gz", below)), str(tmp_path / "cache"))
    assert cache_entries(tmp_path / "cache") == []


def test_truncated_corrupt_missing_and_wrong_archives(tmp_path):
    good = build_agent_tarball(tmp_path / "in").read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(TarballError, match="truncated or corrupt"):
        extract(str(truncated), str(tmp_path / "cache"))
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not an archive at all" * 100)
    with pytest.raises(TarballError, match="not a tar archive"):
        extract(str(garbage), str(tmp_path / "cache"))
    with pytest.raises(TarballError, match="does not exist"):
        extract(str(tmp_path / "nope.tar.gz"), str(tmp_path / "cache"))
    other = write_tar(tmp_path / "pps.tar.gz", [("manifest.json", b"[]")])
    with pytest.raises(TarballError, match="has no tools/charts/datarobot-management-agent/Chart.yaml"):
        extract(str(other), str(tmp_path / "cache"))
    assert cache_entries(tmp_path / "cache") == []


def test_an_unfinished_cache_entry_is_replaced(tmp_path):
    tarball = build_agent_tarball(tmp_path / "in")
    cache = tmp_path / "cache"
    tree = extract(str(tarball), str(cache))
    entry = Path(tree.path).parent
    (entry / ".datarobot_mlops_extracted").unlink()  # as if a run died before the marker
    again = extract(str(tarball), str(cache))
    assert again.changed and Path(again.chart_path, "Chart.yaml").is_file()


def test_extracted_directory_is_used_as_it_is(tmp_path):
    tarball = build_agent_tarball(tmp_path / "in")
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "x", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    for given in (tmp_path / "x", tmp_path / "x" / TOP):
        tree = find_tree(str(given))
        assert tree.path == str(tmp_path / "x" / TOP) and not tree.changed and tree.app_version == "9.2.0"
    with pytest.raises(TarballError, match="holds no tools/charts"):
        find_tree(str(tmp_path / "in"))
    with pytest.raises(TarballError, match="is not a directory"):
        find_tree(str(tmp_path / "missing"))


def test_an_extracted_directory_that_cannot_be_read_names_the_option_and_the_role_variable(tmp_path, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(os, "listdir", refuse)
    with pytest.raises(TarballError, match=r"Cannot read the extracted agent tarball in .*: Permission denied\. "
                                           r"Give a directory this user can read as path \(the agent_tarball role: "
                                           r"mlops_agent_tarball_dir\)"):
        agent_tree(None, str(tmp_path), str(tmp_path / "cache"), False)


def test_a_chart_yaml_that_is_not_utf8_names_the_tarball_and_the_member(tmp_path):
    chart = f"{TOP}/tools/{CHART_SUBPATH[6:]}/Chart.yaml"
    members = [(name, b"version: 1.2.0\nappVersion: \"9.2.0\"\ndescription: caf\xe9\n" if name == chart else content)
               for name, content in agent_members()]
    tarball = write_tar(tmp_path / "latin1.tar.gz", members)
    for _run in range(2):  # the second finds the unpacked tree in the cache, and says the same
        with pytest.raises(TarballError, match=rf"Chart\.yaml of agent tarball {tarball} \(member {chart}\) is not "
                                               r"UTF-8 text .*get the tarball again from DataRobot"):
            extract(str(tarball), str(tmp_path / "cache"))
    extracted = tmp_path / "x"
    with tarfile.open(tarball) as tar:
        tar.extractall(extracted, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    with pytest.raises(TarballError, match=rf"{extracted / TOP / CHART_SUBPATH}/Chart\.yaml is not UTF-8 text"):
        find_tree(str(extracted))
