"""The collection as users get it runs the whole procedure on the rig.

The built artifact, installed offline into an empty collections path (dependencies resolved against the `ansible`
package), runs `ansible-playbook datarobot_mlops.management_agent.site -i inventories/local` from a temporary
directory: no ansible.cfg, no link to the checkout, collections only from the install dir and the `ansible` package.
The local inventory reads the rig from the environment (.rig/env). Needs the rig: `make packaging` brings it up
first, and the fixture below brings it up too (idempotent, as the integration suites do) or fails with its error.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from ansible_cli import BIN, REPO, PlaybookRun
from integration.conftest import demo_archives, rig  # noqa: F401 pylint: disable=unused-import
from test_artifact import FQCN, build_artifact, galaxy_env, install_offline

INSTALLED = "ansible_collections/datarobot_mlops/management_agent"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("artifact")
    (work / "out").mkdir()
    (work / "collections").mkdir()
    proc, _resolved = install_offline(build_artifact(REPO, work / "out"), work / "collections")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "collections"


@pytest.fixture(scope="module")
def environment(rig, demo_archives, installed) -> dict[str, str]:  # noqa: F811 (rig, demo_archives: fixtures)
    """The installed copy only, plus the rig's variables (KUBECONFIG, HELM, registries, DataRobot ...)."""
    assert demo_archives.is_dir()  # what `make demo` writes: the PPS stand-in, the fixture agent tarball
    env = galaxy_env(installed)
    env.update(rig)
    env["PATH"] = f"{rig['RIG_HELM_BIN']}:{rig['RIG_BIN']}:{BIN}:{env['PATH']}"
    return env


def site(env: dict[str, str], cwd: Path, namespace: str) -> PlaybookRun:
    argv = [str(BIN / "ansible-playbook"), f"{FQCN}.site", "-i", str(REPO / "inventories/local"),
            "-e", json.dumps({"mlops_namespace": namespace})]
    return PlaybookRun.of(subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=1800,
                                         check=False))


def _paths(run: PlaybookRun) -> list[str]:
    return [item["path"] for play in run.document.get("plays", [])
            for item in (play["play"], *(task["task"] for task in play["tasks"])) if item.get("path")]


def _changed_tasks(run: PlaybookRun) -> list[str]:
    return [task["task"]["name"] for play in run.document["plays"] for task in play["tasks"]
            if any(host.get("changed") for host in task["hosts"].values())]


def _tool(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False, timeout=300)


def test_the_installed_collection_deploys_the_agent_and_stays_converged(environment, installed, tmp_path):
    namespace = f"t-installed-{uuid.uuid4().hex[:6]}"
    helm, kubectl = environment["HELM"], environment["KUBECTL"]
    try:
        first = site(environment, tmp_path, namespace)
        assert first.returncode == 0, first.failure() + first.stderr[-3000:]
        paths = _paths(first)
        assert paths and all(path.startswith(str(installed / INSTALLED)) for path in paths
                             if "datarobot_mlops/management_agent" in path), paths
        assert not [path for path in paths if path.startswith(str(REPO))], "ran the checkout, not the installed copy"
        assert any(path.startswith(str(installed / INSTALLED / "roles")) for path in paths), paths
        summary = "\n".join(first.task("What this run left on the cluster")["msg"])
        assert f"bosun in {namespace}, revision 1, deployed" in summary, summary

        status = _tool(environment, helm, "status", "bosun", "-n", namespace, "-o", "json")
        assert status.returncode == 0, status.stderr
        release = json.loads(status.stdout)
        assert (release["info"]["status"], release["version"]) == ("deployed", 1)
        deployments = json.loads(_tool(environment, kubectl, "get", "deployments", "-n", namespace, "-o",
                                       "json").stdout)["items"]
        assert deployments
        for deployment in deployments:
            conditions = {c["type"]: c["status"] for c in deployment["status"].get("conditions", [])}
            assert conditions.get("Available") == "True", (deployment["metadata"]["name"], conditions)

        second = site(environment, tmp_path, namespace)
        assert second.returncode == 0, second.failure() + second.stderr[-3000:]
        assert second.changed == 0, _changed_tasks(second)
    finally:
        _tool(environment, helm, "uninstall", "bosun", "-n", namespace, "--wait", "--timeout", "120s")
        _tool(environment, kubectl, "delete", "namespace", namespace, "--wait=false")
