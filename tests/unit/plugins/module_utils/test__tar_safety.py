from __future__ import annotations

import tarfile

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._tar_safety import (
    ABSOLUTE,
    MAX_LINK_HOPS,
    PARENT,
    is_special,
    member_parts,
    name_problem,
    resolve_inside,
)


@pytest.mark.parametrize("name, problem", [
    ("/etc/passwd", ABSOLUTE), ("C:/x", ABSOLUTE), ("c:\\x", ABSOLUTE), ("a\\b", ABSOLUTE),
    ("../x", PARENT), ("a/../../x", PARENT), ("a/./b", None), ("./", None), ("manifest.json", None),
])
def test_name_problem_names_the_escape(name, problem):
    assert name_problem(name) == problem


def test_member_parts_drop_empty_and_dot():
    assert member_parts("./a//b/./c/") == ["a", "b", "c"]


@pytest.mark.parametrize("kind, special", [
    (tarfile.REGTYPE, False), (tarfile.DIRTYPE, False), (tarfile.SYMTYPE, False), (tarfile.LNKTYPE, False),
    (tarfile.CHRTYPE, True), (tarfile.BLKTYPE, True), (tarfile.FIFOTYPE, True),
])
def test_devices_and_fifos_are_special(kind, special):
    info = tarfile.TarInfo("m")
    info.type = kind
    assert is_special(info) is special


def test_links_are_followed_through_the_archive():
    links = {"up": "..", "inside": "a/b", "abs": "/etc"}
    assert resolve_inside(["x", "..", "y"], {}) == ["y"]
    assert resolve_inside(["..", "y"], {}) is None
    assert resolve_inside(["inside", "c"], links) == ["a", "b", "c"]
    assert resolve_inside(["up", "z"], links) is None
    assert resolve_inside(["abs", "z"], links) is None


def test_a_link_loop_is_outside():
    assert resolve_inside(["a"], {"a": "b", "b": "a"}) is None
    chain = {f"l{i}": f"l{i + 1}" for i in range(MAX_LINK_HOPS + 1)}
    assert resolve_inside(["l0"], chain) is None
