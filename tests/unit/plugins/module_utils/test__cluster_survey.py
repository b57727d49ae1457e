from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._cluster_survey import (
    RequirementsUnmet,
    survey,
)


def node(name: str, cpu: str = "2", memory: str = "6Gi", storage: str = "40Gi") -> dict:
    return {"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "ephemeral-storage": storage},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class Cluster:
    """What ReadOnlyCluster answers, as plain data."""

    def __init__(self, groups=(), nodes=(), denied=(), openshift=None, minor="30") -> None:
        self.groups, self._nodes, self.denied, self.openshift = list(groups), list(nodes), list(denied), openshift
        self.minor = minor
        self.asked_permissions: list = []

    def api_groups(self):
        return self.groups

    def openshift_version(self):
        return self.openshift

    def version(self):
        return {"major": "1", "minor": self.minor, "gitVersion": f"v1.{self.minor}.0"}

    def nodes(self, label_selector=""):
        self.selector = label_selector
        return self._nodes

    def denied_permissions(self, wanted):
        self.asked_permissions = list(wanted)
        return self.denied

    def ingress_classes(self):
        return ["nginx"]


def params(**overrides) -> dict:
    return {"platform": "auto", "min_node_cpu": "2", "min_node_memory": "6Gi", "min_node_ephemeral_storage": "40Gi",
            "permissions": [{"verb": "get"}], "kubernetes_permissions": [{"verb": "k8s"}],
            "openshift_permissions": [{"verb": "ocp"}], "fail_on_unmet": True, "node_selector": None, **overrides}


def test_a_fitting_kubernetes_cluster_reports_its_facts_and_asks_the_kubernetes_permissions():
    cluster = Cluster(nodes=[node("a"), node("small", cpu="1")])
    result = survey(cluster, params(node_selector="pool=mlops"))
    nodes = result.pop("nodes")
    assert result == {"changed": False, "platform": "kubernetes", "server_version": "1.30", "fitting_nodes": ["a"],
                      "ingress_classes": ["nginx"], "unmet": []}
    assert [node["name"] for node in nodes] == ["a", "small"] and cluster.selector == "pool=mlops"
    assert cluster.asked_permissions == [{"verb": "get"}, {"verb": "k8s"}]


def test_openshift_is_detected_by_api_group_and_its_version_reported():
    cluster = Cluster(groups=["route.openshift.io"], nodes=[node("a")], openshift="4.14.3")
    result = survey(cluster, params())
    assert (result["platform"], result["openshift_version"]) == ("openshift", "4.14")
    assert cluster.asked_permissions == [{"verb": "get"}, {"verb": "ocp"}]


def test_every_gap_is_in_one_failure_that_carries_the_survey_unless_asked_not_to_fail():
    cluster = Cluster(nodes=[node("small", cpu="1")], denied=["may not create leases"])
    with pytest.raises(RequirementsUnmet) as caught:
        survey(cluster, params())
    assert "may not create leases" in str(caught.value) and "small" in str(caught.value)
    assert "changed" not in caught.value.result and caught.value.result["fitting_nodes"] == []
    assert survey(cluster, params(fail_on_unmet=False))["unmet"] == caught.value.result["unmet"]
