"""The rig's OpenShift flavour serves the API objects the openshift role works with."""

from __future__ import annotations

import json

from conftest import kubectl


def _get(*args: str) -> dict:
    return json.loads(kubectl("get", "-o", "json", *args).stdout)


def test_openshift_api_groups_are_served(openshift_rig):
    groups = {g["name"] for g in json.loads(kubectl("get", "--raw", "/apis").stdout)["groups"]}
    assert {"route.openshift.io", "security.openshift.io", "imageregistry.operator.openshift.io"} <= groups


def test_image_registry_config_can_be_patched(openshift_rig):
    kubectl("patch", "configs.imageregistry.operator.openshift.io", "cluster", "--type=merge",
            "-p", '{"spec":{"defaultRoute":true}}')
    assert _get("configs.imageregistry.operator.openshift.io", "cluster")["spec"]["defaultRoute"] is True
    kubectl("patch", "configs.imageregistry.operator.openshift.io", "cluster", "--type=merge",
            "-p", '{"spec":{"defaultRoute":false}}')


def test_scc_users_can_be_patched(openshift_rig):
    scc = _get("securitycontextconstraints", "anyuid")
    assert scc["runAsUser"]["type"] == "RunAsAny"
    user = "system:serviceaccount:datarobot-mlops:datarobot-management-agent-image-builder"
    kubectl("patch", "securitycontextconstraints", "anyuid", "--type=json",
            "-p", json.dumps([{"op": "add", "path": "/users/-", "value": user}]))
    assert user in _get("securitycontextconstraints", "anyuid")["users"]
    _get("securitycontextconstraints", "hostmount-anyuid")
    for role in ("system:openshift:scc:anyuid", "system:openshift:scc:hostmount-anyuid", "registry-editor"):
        _get("clusterrole", role)


def test_routes_can_be_created_and_read(openshift_rig, namespace):
    route = {"apiVersion": "route.openshift.io/v1", "kind": "Route",
             "metadata": {"name": "agent", "namespace": namespace},
             "spec": {"host": "agent.apps.example", "to": {"kind": "Service", "name": "agent", "weight": 100}}}
    kubectl("create", "-f", "-", stdin=json.dumps(route))
    assert _get("-n", namespace, "route", "agent")["spec"]["host"] == "agent.apps.example"


def test_internal_registry_service_exists(openshift_rig):
    service = _get("-n", "openshift-image-registry", "service", "image-registry")
    assert service["spec"]["ports"][0]["port"] == 5000
