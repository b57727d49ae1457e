"""_helm_driver: which kubernetes.core can drive helm 4, read from the collection's own files."""

from __future__ import annotations

import json

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_driver import (
    collection_version,
    helm4_driver_problem,
)


def test_version_from_manifest_then_galaxy_yml(tmp_path):
    assert collection_version(None) is None
    assert collection_version(tmp_path) is None
    (tmp_path / "galaxy.yml").write_text("namespace: kubernetes\nname: core\nversion: '6.7.0-dev0'  # dev\n")
    assert collection_version(tmp_path) == "6.7.0-dev0"
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"collection_info": {"version": "6.6.0"}}))
    assert collection_version(tmp_path) == "6.6.0"
    (tmp_path / "MANIFEST.json").write_text("{not json")
    assert collection_version(tmp_path) == "6.7.0-dev0"


@pytest.mark.parametrize("helm", ["v3.22.0+gabc", "v3.8.0", "not helm", ""])
def test_no_problem_when_the_helm_is_no_helm_4(helm):
    assert helm4_driver_problem(helm, "6.2.0", "/c") == ""


@pytest.mark.parametrize("version", ["6.6.0", "6.6.1", "7.0.0", "6.10.0"])
def test_new_enough_kubernetes_core_drives_helm_4(version):
    assert helm4_driver_problem("v4.3.1+g0", version, "/c") == ""


@pytest.mark.parametrize(("version", "location", "found"), [
    ("6.2.0", "/site/kubernetes/core", "kubernetes.core 6.2.0 (at /site/kubernetes/core) cannot drive helm 4"),
    ("5.0.0", "/c", "kubernetes.core 5.0.0 (at /c) cannot drive helm 4"),
    ("6.5.99", "/c", "kubernetes.core 6.5.99 (at /c)"),
    (None, "/c", "the version of kubernetes.core at /c cannot be read"),
    ("main", "/c", "the version of kubernetes.core at /c cannot be read"),
    (None, None, "kubernetes.core is not installed"),
])
def test_old_or_unknown_kubernetes_core_under_helm_4_is_refused_with_both_ways_out(version, location, found):
    problem = helm4_driver_problem("v4.0.0", version, location)
    assert found in problem
    assert "install kubernetes.core 6.6.0 or later (ansible-galaxy collection install 'kubernetes.core>=6.6.0')" \
        in problem
    assert "set mlops_ingress_nginx_enabled to false and install an ingress controller yourself" in problem
    assert problem.endswith("or use helm 3 (mlops_helm_binary).")
