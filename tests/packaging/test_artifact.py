"""The collection works in place from the checkout and as a built, offline-installed artifact."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from ansible_cli import BIN, REPO, ansible_env, run_module

FQCN = "datarobot_mlops.management_agent"


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`ansible-galaxy collection build` + offline install into a temp collections path."""
    out = tmp_path_factory.mktemp("build")
    build = _run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)])
    assert build.returncode == 0, build.stderr
    tarball = next(out.glob("datarobot_mlops-management_agent-*.tar.gz"))
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert "plugins/modules/cluster_requirements.py" in names
    for private in (".venv", ".rig", ".collections", "tests/output"):
        assert not any(name == private or name.startswith(private + "/") for name in names), private
    target = tmp_path_factory.mktemp("collections")
    install = _run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps",
                    "-p", str(target), str(tarball)], env=artifact_env(target), cwd=target)
    assert install.returncode == 0, install.stderr
    return target


def artifact_env(collections: Path) -> dict[str, str]:
    """Only the installed artifact: no ansible.cfg, no link to the checkout."""
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=str(collections))
    del env["ANSIBLE_CONFIG"]
    return env


def _doc_list(env: dict[str, str], cwd: Path) -> str:
    proc = _run([str(BIN / "ansible-doc"), "-l", FQCN], env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_plugins_are_listed_from_the_checkout():
    assert f"{FQCN}.cluster_requirements" in _doc_list(ansible_env(), REPO)


def test_plugins_are_listed_from_the_installed_artifact(installed, tmp_path):
    env = artifact_env(installed)
    listing = _doc_list(env, tmp_path)
    assert f"{FQCN}.cluster_requirements" in listing
    doc = _run([str(BIN / "ansible-doc"), f"{FQCN}.cluster_requirements"], env=env, cwd=tmp_path)
    assert "min_node_ephemeral_storage" in doc.stdout


def test_the_installed_module_runs_and_fails_cleanly_without_a_cluster(installed, tmp_path):
    env = artifact_env(installed)
    outcome = run_module(f"{FQCN}.cluster_requirements", {"kubeconfig": str(tmp_path / "missing")},
                         env=env, cwd=tmp_path)
    assert outcome.failed
    assert "Traceback" not in outcome.stdout + outcome.stderr
    assert outcome.result["msg"].startswith("The kubeconfig file given does not exist")
