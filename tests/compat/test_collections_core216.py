"""The supported range (meta/runtime.yml) and the collections the ansible-core 2.16 virtualenv runs with.

Every collection that roles/, playbooks/ and plugins/ call must resolve, in that virtualenv, to a release
whose own meta/runtime.yml accepts ansible-core 2.16 and that galaxy.yml's lower bounds admit: a user on
AAP 2.5 gets no "collection does not support this version of Ansible" warning and nothing our bounds forbid.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ansible_cli import REPO
# core_version: a fixture, used by name
from compat_venv import COMPAT_VENV, compat_run, core_version  # noqa: F401  pylint: disable=unused-import

SOURCES = ("roles", "playbooks", "plugins")
OURS = ("ansible.builtin", "datarobot_mlops.management_agent")


def _requires_ansible(root) -> SpecifierSet:
    return SpecifierSet(yaml.safe_load((root / "meta/runtime.yml").read_text())["requires_ansible"])


@pytest.fixture(scope="module")
def resolved(core_version) -> dict[str, dict]:
    """What the 2.16 virtualenv's ansible-galaxy resolves: FQCN -> {version, path} (the first path wins)."""
    proc = compat_run("ansible-galaxy", "collection", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    found: dict[str, dict] = {}
    for path, collections in json.loads(proc.stdout).items():
        for fqcn, info in collections.items():
            found.setdefault(fqcn, {"version": info["version"], "path": path})
    return found


def called_collections(installed: set[str]) -> set[str]:
    """The installed collections whose FQCNs our roles, playbooks and plugins name (modules, lookups, imports)."""
    text = "\n".join(path.read_text() for source in SOURCES for path in (REPO / source).rglob("*")
                     if path.suffix in (".yml", ".yaml", ".py", ".j2") and path.is_file())
    text += (REPO / "site.yml").read_text()
    # a lookahead, so `ansible_collections.kubernetes.core` yields kubernetes.core too (matches may overlap)
    pairs = re.findall(r"\b(?=([a-z][a-z0-9_]*)[./]([a-z][a-z0-9_]*)[./][a-z_])", text)
    named = {f"{ns}.{name}" for ns, name in pairs}
    return (named & installed) - set(OURS)


def test_the_virtualenv_is_the_oldest_supported_line(core_version):
    assert Version(core_version).release[:2] == (2, 16), core_version


def test_meta_runtime_states_the_tested_range(core_version):
    """requires_ansible admits the 2.16 line tested here and the newest (.venv), and nothing older than 2.16."""
    import ansible.release  # .venv's ansible-core: the newest line, tested by `make unit`, `sanity`, `integration`

    supported = _requires_ansible(REPO)
    assert core_version in supported and "2.16.0" in supported
    assert ansible.release.__version__ in supported
    assert "2.15.13" not in supported, "an older line would be claimed without being tested"


def test_every_called_collection_accepts_core_216_and_galaxy_bounds(resolved, core_version):
    called = called_collections(set(resolved))
    assert {"kubernetes.core", "amazon.aws", "community.aws", "google.cloud"} <= called, called
    bounds = yaml.safe_load((REPO / "galaxy.yml").read_text()).get("dependencies") or {}
    report = []
    for fqcn in sorted(called):
        info = resolved[fqcn]
        assert info["path"].startswith(str(COMPAT_VENV)), f"{fqcn} resolved outside the 2.16 virtualenv: {info}"
        root = REPO.joinpath(info["path"], *fqcn.split("."))
        requires = _requires_ansible(root)
        assert core_version in requires, f"{fqcn} {info['version']} requires ansible-core {requires}"
        if fqcn in bounds and bounds[fqcn] != "*":
            assert info["version"] in SpecifierSet(bounds[fqcn]), f"galaxy.yml {fqcn} {bounds[fqcn]} excludes it"
        report.append(f"{fqcn} {info['version']} (requires_ansible {requires})")
    print("\n".join(report))
