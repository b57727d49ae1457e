"""The role's fleet mode under ansible-core 2.16: one module run on the first cluster pushes for both clusters.

2.16 templates without native types, so the facts a fleet's hosts read from each other (the fleet's hosts, each
host's destination, the first host's result) go through its string-to-literal conversion; the newest line is covered
by tests/integration/test_pps_image_fleet.py.
"""

from __future__ import annotations

import sys

from ansible_cli import REPO, PlaybookRun
# core_version and rig: fixtures, used by name
from compat_venv import COMPAT_PYTHON, compat_playbook
from compat_venv import core_version  # noqa: F401  pylint: disable=unused-import
from integration.conftest import rig  # noqa: F401  pylint: disable=unused-import

sys.path.insert(0, str(REPO / "tests" / "integration"))  # the fleet suite imports its helpers by name
from integration.test_pps_image_fleet import Fleet, fleet_archive, pushed  # noqa: E402


def push(fleet: Fleet, archive, cache) -> PlaybookRun:
    extra = {"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "9.2.0",
             "ansible_python_interpreter": str(COMPAT_PYTHON)}
    return compat_playbook("playbooks/pps_image.yml", fleet.inventory(), extra, timeout=600, ANSIBLE_FORKS="2",
                           XDG_CACHE_HOME=str(cache))


def test_one_run_pushes_for_the_fleet_under_core_216(rig, tmp_path, core_version):
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    with Fleet(tmp_path / "fleet", 2) as fleet:
        first = push(fleet, archive, cache)
        assert first.returncode == 0, first.failure() + first.stderr[-3000:]
        assert first.task("Push the PPS image", "cluster-1").get("skipped"), "cluster-0's run pushed for cluster-1"
        results = pushed(first, fleet)
        served = fleet.manifests("9.2.0")
        assert all(result["changed"] for result in results), results
        assert first.document["stats"]["cluster-1"]["changed"] >= 1, first.document["stats"]  # its own change
        assert [result["digest"] for result in results] == [manifest for manifest, _layers in served]
        assert len({manifest for manifest, _layers in served}) == 1, served
        again = push(fleet, archive, cache)
        assert again.returncode == 0, again.failure()
        assert all(stats["changed"] == 0 for stats in again.document["stats"].values()), again.document["stats"]
