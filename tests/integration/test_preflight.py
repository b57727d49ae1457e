"""preflight on the rig: passes on a fitting cluster, otherwise one message listing every gap."""

from __future__ import annotations

import json

from ansible_cli import ansible_env, run_playbook
from conftest import _up, kubectl

PLAYBOOK = "playbooks/preflight.yml"


def _registry(rig, password: str | None = None, host: str | None = None) -> dict:
    return {"host": host or rig["RIG_REGISTRY"], "username": rig["RIG_REGISTRY_USER"],
            "password": password or rig["RIG_REGISTRY_PASSWORD"], "ca_path": rig["RIG_REGISTRY_CA"]}


def test_preflight_passes_on_the_rig_and_publishes_facts(rig):
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": _registry(rig)}, check=True)
    assert run.returncode == 0, run.failure()
    assert run.changed == 0
    facts = run.task("Publish what later stages need")["ansible_facts"]
    assert facts["__preflight_published"]["platform"] == "kubernetes"
    assert facts["__preflight_published"]["server_version"] == "1.35"
    assert rig["RIG_REGISTRY_PASSWORD"] not in run.stdout + run.stderr


def test_every_problem_is_listed_in_one_failure(rig):
    run = run_playbook(PLAYBOOK, extra_vars={
        "mlops_preflight_registry": _registry(rig, password="wrong-password"),
        "mlops_helm_binary": "/nonexistent/helm",
        "mlops_preflight_min_node_memory": "64Gi",
        "mlops_management_agent_ingress_class": "absent-class",
        "mlops_ingress_nginx_enabled": False,
    })
    assert run.returncode != 0
    message = run.failure()
    lines = message.split("\n- ")
    assert lines[0] == "The cluster is not ready for the management agent:"
    assert any("memory capacity 6.0Gi (6.0Gi allocatable) < 64Gi" in line for line in lines)
    assert "helm (/nonexistent/helm) was not found or did not run: install helm >= 3.8.0" in message
    assert f"Registry {rig['RIG_REGISTRY']} rejected the credentials (HTTP 401)" in message
    assert "No ingress class absent-class exists and ingress_nginx will not install one" in message
    assert len(lines) == 5
    assert "wrong-password" not in run.stdout + run.stderr


def test_an_old_helm_is_refused_with_the_version_message(rig):
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_helm_min_version": "9.0.0"})
    assert "The collection requires helm >= 9.0.0, current version is 3.19.5: upgrade helm." in run.failure()


def test_an_unreachable_registry_is_named(rig):
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": _registry(rig, host="127.0.0.1:9")})
    assert "Registry 127.0.0.1:9 is unreachable" in run.failure()


def test_only_small_nodes(rig):
    small = {"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": "small-node", "annotations": {"kwok.x-k8s.io/node": "fake"}},
             "status": {"capacity": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi", "pods": "110"},
                        "allocatable": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi", "pods": "110"}}}
    kubectl("create", "-f", "-", stdin=json.dumps(small))
    try:
        kubectl("wait", "--for=condition=Ready", "node/small-node", "--timeout=60s")
        kubectl("delete", "node", "rig-node-1", "rig-node-2", "rig-node-3")
        run = run_playbook(PLAYBOOK)
        assert run.returncode != 0
        assert ("No schedulable node has at least 2 CPU, 6G memory and 38G ephemeral storage (node capacity) "
                "(small-node: cpu capacity 1 (1 allocatable) < 2, memory capacity 2.0Gi (2.0Gi allocatable) < 6G, "
                "ephemeral-storage capacity 10.0Gi (10.0Gi allocatable) < 38G): add or resize a node pool"
                in run.failure())
    finally:
        kubectl("delete", "node", "small-node", check=False)
        _up("kubernetes")  # puts the rig's three nodes back


def test_a_kubeconfig_without_rights(rig, namespace, tmp_path):
    kubectl("-n", namespace, "create", "serviceaccount", "nobody")
    token = kubectl("-n", namespace, "create", "token", "nobody").stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "nobody",
        "clusters": [{"name": "rig", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [{"name": "nobody", "context": {"cluster": "rig", "user": "nobody"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    run = run_playbook(PLAYBOOK, env=ansible_env(KUBECONFIG=str(path)))
    assert run.returncode != 0
    assert "forbids it: grant the user read access, or run as a cluster administrator." in run.failure()
    assert token not in run.stdout + run.stderr


def test_bad_variables_fail_before_anything_runs(rig):
    # A collection-wide variable: the playbook's own check, before the role starts.
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_cluster_platform": "windows", "mlops_preflight_registry": "not-a-dict"})
    assert run.returncode != 0
    message = run.failure()
    assert "mlops_cluster_platform" in message and "windows" in message
    assert not any("cluster_requirements" in str(task["task"]) or task["task"]["name"].endswith("Check the cluster's "
                   "version, nodes and permissions") for play in run.document["plays"] for task in play["tasks"])
    # The role's own variable: its argument spec.
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": "not-a-dict"})
    assert run.returncode != 0
    assert "mlops_preflight_registry" in run.failure()
