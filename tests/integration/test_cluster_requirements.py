"""cluster_requirements against the rig's real API server."""

from __future__ import annotations

import copy
import json
import os
import uuid

import pytest

from ansible_cli import ansible_env, run_module, run_playbook
from conftest import kubectl
from fixtures.node_shapes import SHAPES, node_object

MODULE = "datarobot_mlops.management_agent.cluster_requirements"


def test_the_rig_meets_the_vendor_minimums(rig):
    outcome = run_module(MODULE, {})
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert result["changed"] is False
    assert result["platform"] == "kubernetes"
    assert result["server_version"] == "1.35"
    assert result["fitting_nodes"] == ["rig-node-1", "rig-node-2", "rig-node-3"]
    assert result["unmet"] == []


@pytest.mark.parametrize("check", [False, True])
def test_all_unmet_requirements_are_listed_in_one_message(rig, check):
    outcome = run_module(MODULE, {"min_node_cpu": "4", "min_node_memory": "8Gi"}, check=check)
    assert outcome.failed
    msg = outcome.result["msg"]
    assert msg.startswith("The cluster does not meet the management agent's requirements:")
    for node in ("rig-node-1", "rig-node-2", "rig-node-3"):
        assert f"{node}: cpu capacity 2 (2 allocatable) < 4, memory capacity 6.0Gi (6.0Gi allocatable) < 8Gi" in msg
    assert "Traceback" not in outcome.stdout + outcome.stderr


def test_report_only_mode_returns_findings_without_failing(rig):
    outcome = run_module(MODULE, {"min_node_ephemeral_storage": "100Gi", "fail_on_unmet": False})
    assert not outcome.failed
    assert len(outcome.result["unmet"]) == 1 and "ephemeral-storage capacity 40.0Gi (40.0Gi allocatable) < 100Gi" in \
        outcome.result["unmet"][0]


def test_missing_permissions_are_named(rig, namespace, tmp_path):
    kubectl("-n", namespace, "create", "serviceaccount", "limited")
    kubectl("create", "clusterrolebinding", f"{namespace}-view", "--clusterrole=view",
            f"--serviceaccount={namespace}:limited")
    kubectl("create", "clusterrole", f"{namespace}-nodes", "--verb=list", "--resource=nodes,ingressclasses")
    kubectl("create", "clusterrolebinding", f"{namespace}-nodes", f"--clusterrole={namespace}-nodes",
            f"--serviceaccount={namespace}:limited")
    token = kubectl("-n", namespace, "create", "token", "limited").stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    try:
        outcome = run_module(MODULE, {
            "host": cluster["server"], "ca_cert": cluster["certificate-authority"], "api_key": token,
            "permissions": [{"verb": "create", "group": "apps", "resource": "deployments", "namespace": namespace},
                            {"verb": "get", "resource": "pods", "namespace": namespace}],
        }, verbosity=3, env=ansible_env(without=("KUBECONFIG", "K8S_AUTH_KUBECONFIG")))
    finally:
        kubectl("delete", "clusterrolebinding", f"{namespace}-view", f"{namespace}-nodes")
        kubectl("delete", "clusterrole", f"{namespace}-nodes")
    assert outcome.failed
    assert outcome.result["unmet"] == [
        f"Not allowed to create deployments (apps API group) in namespace {namespace}: "
        "bind the user to a role that grants it."]
    assert token not in outcome.stdout + outcome.stderr


def test_openshift_is_detected(openshift_rig):
    outcome = run_module(MODULE, {})
    assert not outcome.failed, outcome.result
    assert outcome.result["platform"] == "openshift"
    assert "openshift_version" not in outcome.result  # the rig has no ClusterVersion object


def test_unreachable_api_server_gives_a_clear_message(rig):
    args = {"host": "https://127.0.0.1:9", "api_key": "not-a-real-token", "validate_certs": False}
    outcome = run_module(MODULE, args, env=ansible_env(without=("KUBECONFIG", "K8S_AUTH_KUBECONFIG")))
    assert outcome.failed
    assert "Cannot reach the API server at https://127.0.0.1:9" in outcome.result["msg"]
    assert "Traceback" not in outcome.stdout + outcome.stderr


def test_an_exec_plugin_missing_here_is_named_not_taken_for_a_permission(rig, tmp_path):
    """The rig's cluster with a user whose token comes from a program that is not installed (an EKS kubeconfig in an
    execution environment without the aws CLI): without the check, the client goes on without credentials and the
    API server answers 403 for system:anonymous. Listed after a missing file, as KUBECONFIG may list it."""
    import yaml

    with open(os.environ["KUBECONFIG"], encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    base = os.path.dirname(os.environ["KUBECONFIG"])
    for kind, key in (("clusters", "cluster"), ("users", "user")):  # a copy elsewhere: file paths made absolute
        for entry in config[kind]:
            for field in ("certificate-authority", "client-certificate", "client-key"):
                value = entry[key].get(field)
                if value and not os.path.isabs(value):
                    entry[key][field] = os.path.join(base, value)
    working = copy.deepcopy(config)
    for entry in config["users"]:
        entry["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                  "command": "aws-not-installed-here", "args": ["eks", "get-token"]}}
    path = tmp_path / "eks-like"
    path.write_text(yaml.safe_dump(config))
    listed = f"{tmp_path / 'missing'}:{path}"
    outcome = run_module(MODULE, {"kubeconfig": listed},
                         env=ansible_env(without=("KUBECONFIG", "K8S_AUTH_KUBECONFIG")))
    assert outcome.failed
    message = outcome.result["msg"]
    assert "gets its token from the program aws-not-installed-here (an exec plugin)" in message, message
    assert "Traceback" not in outcome.stdout + outcome.stderr
    listed = run_module(MODULE, {"kubeconfig": f"{tmp_path / 'missing'}:{os.environ['KUBECONFIG']}"},
                        env=ansible_env(without=("KUBECONFIG", "K8S_AUTH_KUBECONFIG")))
    assert not listed.failed, listed.result.get("msg")  # a list with a missing file is a kubeconfig

    # One file: its current context's user runs the missing plugin; the play's K8S_AUTH_CONTEXT (as the roles pick a
    # cluster) names a working one. That cluster is used, and not refused for the other.
    for kind in ("users", "contexts"):
        config[kind] += [dict(entry, name=f"working-{entry['name']}") for entry in working[kind]]
    for entry in config["contexts"]:
        if entry["name"].startswith("working-"):
            entry["context"] = dict(entry["context"], user=f"working-{entry['context']['user']}")
    both = tmp_path / "both"
    both.write_text(yaml.safe_dump(config))
    context = f"working-{config['current-context']}"
    chosen = run_module(MODULE, {}, env=ansible_env(without=("KUBECONFIG",), K8S_AUTH_KUBECONFIG=str(both),
                                                    K8S_AUTH_CONTEXT=context))
    assert not chosen.failed, chosen.result.get("msg")
    refused = run_module(MODULE, {}, env=ansible_env(without=("KUBECONFIG",), K8S_AUTH_KUBECONFIG=str(both)))
    assert refused.failed and "aws-not-installed-here (an exec plugin)" in refused.result["msg"], refused.result


def test_module_defaults_of_our_k8s_group_reach_our_module_and_kubernetes_core_alike(rig, tmp_path):
    """meta/runtime.yml: our k8s group takes in kubernetes.core.k8s, so one set of auth defaults serves both."""
    unreachable = {"host": "https://127.0.0.1:9", "api_key": "not-a-real-token", "validate_certs": False}
    plays = [{"hosts": "localhost", "gather_facts": False,
              "module_defaults": {"group/datarobot_mlops.management_agent.k8s": defaults},
              "tasks": [{"name": f"ours {name}", MODULE: {}, "ignore_errors": True},
                        {"name": f"theirs {name}", "kubernetes.core.k8s_info": {"kind": "Node"}, "ignore_errors": True}]}
             for name, defaults in (("from kubeconfig", {"kubeconfig": os.environ["KUBECONFIG"]}),
                                    ("from host", unreachable))]
    playbook = tmp_path / "defaults.yml"
    playbook.write_text(json.dumps(plays))
    run = run_playbook(str(playbook), env=ansible_env(without=("KUBECONFIG", "K8S_AUTH_KUBECONFIG")))
    assert run.task("ours from kubeconfig")["fitting_nodes"] == ["rig-node-1", "rig-node-2", "rig-node-3"]
    assert len(run.task("theirs from kubeconfig")["resources"]) == 3
    assert "Cannot reach the API server at https://127.0.0.1:9" in run.task("ours from host")["msg"]
    assert run.task("theirs from host").get("failed")


@pytest.fixture
def shaped_nodes(rig):
    """One kwok node per instance shape, labelled for this test and tainted so that no other test's pod lands there."""
    run = uuid.uuid4().hex[:6]
    nodes = []
    for shape in SHAPES:
        node = node_object(f"{shape}-{run}", shape, {"mlops-test/shapes": run, "mlops-test/shape": shape})
        node["metadata"]["annotations"] = {"kwok.x-k8s.io/node": "fake"}
        node["spec"] = {"taints": [{"key": "mlops-test/shapes", "value": run, "effect": "NoSchedule"}]}
        nodes.append(node)
    kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    kubectl("wait", "--for=condition=Ready", "node", "-l", f"mlops-test/shapes={run}", "--timeout=60s")
    yield run
    kubectl("delete", "node", "-l", f"mlops-test/shapes={run}", "--wait=false", check=False)


def test_nodes_shaped_like_real_instance_types_are_judged_by_capacity(shaped_nodes):
    outcome = run_module(MODULE, {"node_selector": f"mlops-test/shapes={shaped_nodes}", "fail_on_unmet": False})
    assert not outcome.failed, outcome.result.get("msg")
    by_shape = {node["name"].rsplit("-", 1)[0]: node for node in outcome.result["nodes"]}
    assert sorted(by_shape) == sorted(SHAPES)
    for shape, (capacity, _allocatable, fits) in SHAPES.items():
        node = by_shape[shape]
        print(f"{shape}: capacity {node['capacity']}, allocatable {node['allocatable']}, "
              f"shortfalls {node['shortfalls'] or 'none'}")
        assert (not node["shortfalls"]) is fits, node
        assert node["capacity"]["cpu"] == capacity["cpu"]
    assert sorted(outcome.result["fitting_nodes"]) == sorted(f"{shape}-{shaped_nodes}" for shape, figures
                                                             in SHAPES.items() if figures[2])


def test_a_pool_of_too_small_nodes_is_refused_naming_the_node_and_what_it_lacks(shaped_nodes):
    selector = f"mlops-test/shapes={shaped_nodes},mlops-test/shape=eks-t3-medium"
    outcome = run_module(MODULE, {"node_selector": selector})
    assert outcome.failed
    assert (f"eks-t3-medium-{shaped_nodes}: memory capacity 3.8Gi (3.2Gi allocatable) < 6G"
            in outcome.result["msg"]), outcome.result["msg"]
    assert outcome.result["fitting_nodes"] == [] and len(outcome.result["nodes"]) == 1
