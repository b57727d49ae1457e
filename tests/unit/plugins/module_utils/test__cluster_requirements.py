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
from fixtures.node_shapes import SHAPES, node_object


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
    for fragment in ("small: cpu capacity 1.5 (1.5 allocatable) < 2, memory capacity 4.0Gi (4.0Gi allocatable) < 6G",
                     "cordoned: not Ready or cordoned",
                     "disk: ephemeral-storage capacity 20.0Gi (20.0Gi allocatable) < 38G", "add or resize a node pool",
                     "min_node_memory"):
        assert fragment in nodes_line


def test_old_openshift_is_refused_even_on_a_new_kubernetes():
    result = assess((1, 18 + 10), "openshift", [NodeCapacity.from_node(node("a"))], openshift_version=(4, 5))
    assert result.unmet == ["OpenShift 4.5 is older than the supported 4.6: upgrade the cluster."]


def test_custom_minimums_are_honoured():
    minimums = Minimums.from_strings("4", "16Gi", "100Gi")
    result = assess((1, 30), "kubernetes", [NodeCapacity.from_node(node("a"))], minimums)
    assert "at least 4 CPU, 16Gi memory and 100Gi ephemeral storage" in result.unmet[0]


def test_no_nodes_at_all_is_reported():
    result = assess((1, 30), "kubernetes", [])
    assert "the cluster has no nodes" in result.unmet[0]


def test_version_text_forms():
    assert parse_version("4.14.3") == (4, 14)
    with pytest.raises(RequirementError):
        parse_version("stable")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_real_instance_types_are_judged_by_capacity_with_allocatable_shown(shape):
    fits = SHAPES[shape][2]
    result = assess((1, 30), "kubernetes", [NodeCapacity.from_node(node_object(shape, shape))])
    assert result.ok is fits, result.unmet
    report = result.nodes[0]
    assert report["capacity"]["cpu"] == "2" and report["allocatable"]["cpu"] in ("1.93", "1.9")
    if not fits:
        assert f"{shape}: memory capacity 3.8Gi (3.2Gi allocatable) < 6G" in result.unmet[0]


def test_minimums_given_by_the_user_are_named_as_given():
    nodes = [NodeCapacity.from_node(node_object("n", "eks-m5-large"))]
    result = assess((1, 30), "kubernetes", nodes, Minimums.from_strings("4", "16Gi", "100G"))
    assert "at least 4 CPU, 16Gi memory and 100G ephemeral storage" in result.unmet[0]
    assert "cpu capacity 2 (1.93 allocatable) < 4" in result.unmet[0]
