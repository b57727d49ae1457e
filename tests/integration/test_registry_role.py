"""The registry role, generic vendor, on the rig's TLS and HTTP registries."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from ansible_cli import run_module, run_playbook
from conftest import kubectl
from test_pps_image import archive

PLAYBOOK = "playbooks/registry.yml"
FACTS = "Publish the chart's imageBuilder values and the repository paths"


@pytest.fixture
def target(new_namespace):
    """A namespace name for the role to create; deleted afterwards."""
    return new_namespace("t-registry")


def tls_vars(rig, namespace):
    return {"mlops_namespace": namespace, "mlops_registry_host": rig["RIG_REGISTRY"],
            "mlops_registry_username": rig["RIG_REGISTRY_USER"], "mlops_registry_password": rig["RIG_REGISTRY_PASSWORD"],
            "mlops_registry_ca_path": rig["RIG_REGISTRY_CA"]}


def secret_login(namespace, host):
    secret = json.loads(kubectl("-n", namespace, "get", "secret", "registry-creds", "-o", "json").stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    entry = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"][host]
    username, password = base64.b64decode(entry["auth"]).decode().split(":", 1)
    assert (entry["username"], entry["password"]) == (username, password)
    return username, password


def test_generic_tls_registry(rig, target, tmp_path):
    first = run_playbook(PLAYBOOK, extra_vars=tls_vars(rig, target))
    assert first.returncode == 0, first.failure()
    assert rig["RIG_REGISTRY_PASSWORD"] not in first.stdout + first.stderr
    published = first.task(FACTS)["ansible_facts"]
    assert published["__registry_published"]["repositories"] == {
        "management_agent": "datarobot/mlops-management-agent", "tracking_agent": "datarobot/mlops-tracking-agent",
        "pps": "datarobot/datarobot-portable-prediction-api", "frozen_models": "mlops/frozen-models"}
    host = rig["RIG_REGISTRY"]
    assert published["__registry_published"]["image_builder"] == {
        "secretName": "registry-creds", "configMap": "",
        "serviceAccount": {"create": True, "name": "datarobot-management-agent-image-builder", "annotations": {}},
        "insecureRegistries": [], "skipSslVerifyRegistries": [],
        "extraVolumes": [{"name": "registry-ca", "configMap": {"name": "registry-ca"}}],
        "extraVolumeMounts": [{"name": "registry-ca", "mountPath": f"/certs/{host}", "readOnly": True}],
        "extraArgs": [f"--registry-certificate={host}=/certs/{host}/ca.crt"]}
    ca = json.loads(kubectl("-n", target, "get", "configmap", "registry-ca", "-o", "json").stdout)["data"]
    assert ca["ca.crt"].strip() == open(rig["RIG_REGISTRY_CA"], encoding="utf-8").read().strip()
    # the secret's credentials really push
    username, password = secret_login(target, host)
    facts = archive(tmp_path)
    pushed = run_module("datarobot_mlops.management_agent.pps_image", {
        "src": str(facts.path), "name": f"{host}/mlops/frozen-models", "tag": uuid.uuid4().hex[:8],
        "username": username, "password": password, "ca_path": rig["RIG_REGISTRY_CA"], "cache": ""})
    assert not pushed.failed, pushed.result.get("msg")
    again = run_playbook(PLAYBOOK, extra_vars=tls_vars(rig, target))
    assert again.returncode == 0 and again.changed == 0
    rotated = run_playbook(PLAYBOOK, extra_vars={**tls_vars(rig, target), "mlops_registry_password": "rotated"})
    assert rotated.task("Push credentials for the image builder (dockerconfigjson)")["changed"] is True
    assert secret_login(target, host) == (rig["RIG_REGISTRY_USER"], "rotated")
    assert "rotated" not in rotated.stdout + rotated.stderr


def test_http_registry_is_listed_as_insecure(rig, target):
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_namespace": target,
                                             "mlops_registry_host": rig["RIG_INSECURE_REGISTRY"],
                                             "mlops_registry_insecure": True, "mlops_registry_username": "",
                                             "mlops_registry_password": "", "mlops_registry_ca_path": ""})
    assert run.returncode == 0, run.failure()
    builder = run.task(FACTS)["ansible_facts"]["__registry_published"]["image_builder"]
    assert builder["insecureRegistries"] == [rig["RIG_INSECURE_REGISTRY"]]
    assert builder["secretName"] == "" and builder["extraArgs"] == []
    assert kubectl("-n", target, "get", "secret", "registry-creds", check=False).returncode != 0


def test_check_mode_changes_nothing(rig, target):
    run = run_playbook(PLAYBOOK, extra_vars=tls_vars(rig, target), check=True)
    assert run.returncode == 0, run.failure()
    assert run.changed > 0
    assert kubectl("get", "namespace", target, check=False).returncode != 0


def test_bad_variables_fail_before_anything(rig, target):
    unknown = run_playbook(PLAYBOOK, extra_vars={**tls_vars(rig, target), "mlops_registry_vendor": "quay"})
    assert unknown.returncode != 0 and "mlops_registry_vendor" in unknown.failure() and "quay" in unknown.failure()
    missing = run_playbook(PLAYBOOK, extra_vars={"mlops_namespace": target, "mlops_registry_host": ""})
    assert missing.returncode != 0 and missing.failure().startswith("mlops_registry_host is empty")
    assert kubectl("get", "namespace", target, check=False).returncode != 0


def test_acr_secret_for_the_named_registry(rig, target):
    acr = {"mlops_namespace": target, "mlops_registry_vendor": "acr", "mlops_registry_acr_name": "mlopsdemo",
           "mlops_registry_host": "", "mlops_registry_username": "mlopsdemo", "mlops_registry_password": "acr-admin-password",
           "mlops_registry_ca_path": ""}
    run = run_playbook(PLAYBOOK, extra_vars=acr)
    assert run.returncode == 0, run.failure()
    assert secret_login(target, "mlopsdemo.azurecr.io") == ("mlopsdemo", "acr-admin-password")
    builder = run.task(FACTS)["ansible_facts"]["__registry_published"]["image_builder"]
    assert builder["secretName"] == "registry-creds" and builder["serviceAccount"]["annotations"] == {}
    assert "acr-admin-password" not in run.stdout + run.stderr
    again = run_playbook(PLAYBOOK, extra_vars=acr)
    assert again.returncode == 0 and again.changed == 0
    checked = run_playbook(PLAYBOOK, extra_vars={**acr, "mlops_registry_password": "new-admin-password"}, check=True)
    assert checked.task("Push credentials for the image builder (dockerconfigjson)")["changed"] is True
    assert secret_login(target, "mlopsdemo.azurecr.io") == ("mlopsdemo", "acr-admin-password")


def test_gcr_workload_identity_annotation_and_no_secret(rig, target):
    gcr = {"mlops_namespace": target, "mlops_registry_vendor": "gcr", "mlops_registry_host": "gcr.io",
           "mlops_registry_path_prefix": "my-project/", "mlops_registry_gcp_project": "my-project",
           "mlops_registry_gcp_service_account": "gcr-push-user", "mlops_registry_username": "", "mlops_registry_password": "",
           "mlops_registry_ca_path": ""}
    run = run_playbook(PLAYBOOK, extra_vars=gcr)
    assert run.returncode == 0, run.failure()
    published = run.task(FACTS)["ansible_facts"]
    builder = published["__registry_published"]["image_builder"]
    assert builder["serviceAccount"] == {
        "create": True, "name": "datarobot-management-agent-image-builder",
        "annotations": {"iam.gke.io/gcp-service-account": "gcr-push-user@my-project.iam.gserviceaccount.com"}}
    assert builder["secretName"] == ""
    assert published["__registry_published"]["repositories"]["pps"] == \
        "my-project/datarobot/datarobot-portable-prediction-api"
    assert kubectl("-n", target, "get", "secret", "registry-creds", check=False).returncode != 0
    again = run_playbook(PLAYBOOK, extra_vars=gcr)
    assert again.returncode == 0 and again.changed == 0
    missing = run_playbook(PLAYBOOK, extra_vars={"mlops_namespace": target, "mlops_registry_vendor": "gcr",
                                                 "mlops_registry_host": "gcr.io"})
    assert "mlops_registry_vendor gcr needs mlops_registry_gcp_project and mlops_registry_gcp_service_account" in missing.failure()
