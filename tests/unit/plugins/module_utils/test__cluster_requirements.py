from __future__ import annotations

from decimal import Decimal

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._cluster_requirements import (
    GIB,
    Minimums,
    NodeCapacity,
    RequirementError,
    assess,
    is_openshift,
    parse_quantity,
    parse_version,
    server_version,
)


@pytest.mark.parametrize("text, expected", [
    ("2", Decimal(2)), ("1500m", Decimal("1.5")), ("6Gi", Decimal(6 * GIB)), ("40G", Decimal(40 * 10**9)),
    ("1e3", Decimal(1000)), ("128974848", Decimal(128974848)), ("129M", Decimal(129 * 10**6)), ("0.5", Decimal("0.5")),
])
def test_quantities_follow_kubernetes_units(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "two", "6 GiB", "5Qi"])
def test_bad_quantity_is_named_in_the_error(text):
    with pytest.raises(RequirementError, match="quantity|unit"):
        parse_quantity(text)


@pytest.mark.parametrize("answer, expected", [
    ({"gitVersion": "v1.35.4"}, (1, 35)),
    ({"major": "1", "minor": "27+", "gitVersion": ""}, (1, 27)),
    ({"gitVersion": "v1.29.3-eks-adc7111"}, (1, 29)),
])
def test_server_version_reads_managed_cluster_answers(answer, expected):
    assert server_version(answer) == expected


def test_server_version_without_version_fails_clearly():
    with pytest.raises(RequirementError, match="no version"):
        server_version({"platform": "linux/amd64"})


def test_openshift_is_detected_by_its_api_groups():
    assert is_openshift(["apps", "route.openshift.io"])
    assert not is_openshift(["apps", "networking.k8s.io", "openshift.example.com"])


def node(name, cpu="2", memory="6Gi", storage="40Gi", ready="True", unschedulable=False):
    return {"metadata": {"name": name}, "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "ephemeral-storage": storage},
                       "conditions": [{"type": "Ready", "status": ready}]}}


def test_a_node_exactly_at_the_minimum_fits():
    result = assess((1, 35), "kubernetes", [NodeCapacity.from_node(node("a"))])
    assert result.ok and result.fitting_nodes == ["a"]


def test_every_gap_is_listed_in_one_assessment():
    nodes = [NodeCapacity.from_node(node("small", cpu="1500m", memory="4Gi")),
             NodeCapacity.from_node(node("cordoned", unschedulable=True)),
             NodeCapacity.from_node(node("disk", storage="20Gi"))]
    result = assess((1, 18), "kubernetes", nodes)
    assert not result.ok
    assert result.fitting_nodes == []
    assert result.unmet[0] == "Kubernetes 1.18 is older than the supported 1.19: upgrade the cluster."
    nodes_line = result.unmet[1]
    for fragment in ("small: cpu 1.5 < 2, memory 4.0Gi < 6.0Gi", "cordoned: not Ready or cordoned",
                     "disk: ephemeral-storage 20.0Gi < 40.0Gi", "add or resize a node pool"):
        assert fragment in nodes_line


def test_old_openshift_is_refused_even_on_a_new_kubernetes():
    result = assess((1, 18 + 10), "openshift", [NodeCapacity.from_node(node("a"))], openshift_version=(4, 5))
    assert result.unmet == ["OpenShift 4.5 is older than the supported 4.6: upgrade the cluster."]


def test_custom_minimums_are_honoured():
    minimums = Minimums.from_strings("4", "16Gi", "100Gi")
    result = assess((1, 30), "kubernetes", [NodeCapacity.from_node(node("a"))], minimums)
    assert "at least 4 CPU, 16.0Gi memory and 100.0Gi ephemeral storage" in result.unmet[0]


def test_no_nodes_at_all_is_reported():
    result = assess((1, 30), "kubernetes", [])
    assert "the cluster has no nodes" in result.unmet[0]


def test_version_text_forms():
    assert parse_version("4.14.3") == (4, 14)
    with pytest.raises(RequirementError):
        parse_version("stable")
