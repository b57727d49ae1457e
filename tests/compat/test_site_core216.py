"""One whole site.yml run on the rig under ansible-core 2.16, the oldest supported line.

The 2.16 virtualenv's ansible-playbook runs site.yml with the local inventory into a fresh namespace, with
the collections installed in that virtualenv (never .venv's ansible package) and its Python as the modules'
interpreter. The newest line is covered by tests/integration/test_site.py.
"""

from __future__ import annotations

import json
import uuid


from ansible_cli import REPO, PlaybookRun
# core_version and rig: fixtures, used by name
from compat_venv import COMPAT_BIN, COMPAT_PYTHON, COMPAT_VENV, compat_playbook, compat_run
from compat_venv import core_version  # noqa: F401  pylint: disable=unused-import
from integration.conftest import cleanup, demo_archives, kubectl, release_status, rig  # noqa: F401  pylint: disable=unused-import


def run_site(namespace: str) -> PlaybookRun:
    extra = {"mlops_namespace": namespace, "ansible_python_interpreter": str(COMPAT_PYTHON)}
    return compat_playbook("site.yml", str(REPO / "inventories/local"), extra)


def test_the_run_uses_the_216_engine_and_collections(core_version):
    proc = compat_run("ansible-playbook", "--version")
    assert proc.returncode == 0, proc.stderr
    assert f"[core {core_version}]" in proc.stdout and f"{COMPAT_BIN}/python" in proc.stdout, proc.stdout
    listed = compat_run("ansible-galaxy", "collection", "list", "kubernetes.core", "--format", "json")
    paths = list(json.loads(listed.stdout))
    assert paths and all(path.startswith(str(COMPAT_VENV)) for path in paths), paths


def test_site_converges_under_core_216(rig, demo_archives, core_version):
    namespace = f"t-core216-{uuid.uuid4().hex[:6]}"
    try:
        run = run_site(namespace)
        assert run.returncode == 0, run.failure() + run.stderr[-3000:]
        assert run.stats.get("failures", 0) == 0 and run.stats.get("ok", 0) > 0, run.stats
        # 2.16 warns where 2.19 would fail (e.g. a non-boolean conditional): none may come from our collection.
        warnings = " ".join(run.stderr.split()).replace("[DEPRECATION WARNING]", "\n[DEPRECATION WARNING]")
        ours = [line for line in warnings.splitlines() if line.startswith("[DEPRECATION") and "datarobot_mlops" in
                line.replace(" ", "")]
        assert ours == [], ours
        summary = "\n".join(run.task("What this run left on the cluster")["msg"])
        assert f"bosun in {namespace}, revision 1, deployed" in summary, summary
        status = release_status(namespace)
        assert status["info"]["status"] == "deployed" and status["version"] == 1
        deployments = json.loads(kubectl("-n", namespace, "get", "deployments", "-o", "json").stdout)["items"]
        assert deployments, f"no Deployment in {namespace}"
        for deployment in deployments:
            conditions = {c["type"]: c["status"] for c in deployment["status"].get("conditions", [])}
            assert conditions.get("Available") == "True", (deployment["metadata"]["name"], conditions)
    finally:
        cleanup(namespace)
