"""The registry role, generic vendor, on the rig's TLS and HTTP registries."""

from __future__ import annotations

import base64
import json
import uuid

from ansible_cli import run_module, run_playbook
from conftest import kubectl
from test_pps_image import archive

PLAYBOOK = "playbooks/registry.yml"
FACTS = "Publish the chart's imageBuilder values and the repository paths"


def tls_vars(rig, namespace):
    return {"registry_namespace": namespace, "registry_host": rig["RIG_REGISTRY"],
            "registry_username": rig["RIG_REGISTRY_USER"], "registry_password": rig["RIG_REGISTRY_PASSWORD"],
            "registry_ca_path": rig["RIG_REGISTRY_CA"]}


def secret_login(namespace, host):
    secret = json.loads(kubectl("-n", namespace, "get", "secret", "registry-creds", "-o", "json").stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    entry = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"][host]
    username, password = base64.b64decode(entry["auth"]).decode().split(":", 1)
    assert (entry["username"], entry["password"]) == (username, password)
    return username, password


def test_generic_tls_registry(rig, tmp_path):
    namespace = f"t-registry-{uuid.uuid4().hex[:6]}"
    try:
        first = run_playbook(PLAYBOOK, extra_vars=tls_vars(rig, namespace))
        assert first.returncode == 0, first.failure()
        assert rig["RIG_REGISTRY_PASSWORD"] not in first.stdout + first.stderr
        published = first.task(FACTS)["ansible_facts"]
        assert published["management_agent_repositories"] == {
            "management_agent": "datarobot/mlops-management-agent", "tracking_agent": "datarobot/mlops-tracking-agent",
            "pps": "datarobot/datarobot-portable-prediction-api", "frozen_models": "mlops/frozen-models"}
        host = rig["RIG_REGISTRY"]
        assert published["management_agent_image_builder"] == {
            "secretName": "registry-creds", "configMap": "",
            "serviceAccount": {"create": True, "name": "datarobot-management-agent-image-builder", "annotations": {}},
            "insecureRegistries": [], "skipSslVerifyRegistries": [],
            "extraVolumes": [{"name": "registry-ca", "configMap": {"name": "registry-ca"}}],
            "extraVolumeMounts": [{"name": "registry-ca", "mountPath": f"/certs/{host}", "readOnly": True}],
            "extraArgs": [f"--registry-certificate={host}=/certs/{host}/ca.crt"]}
        ca = json.loads(kubectl("-n", namespace, "get", "configmap", "registry-ca", "-o", "json").stdout)["data"]
        assert ca["ca.crt"].strip() == open(rig["RIG_REGISTRY_CA"], encoding="utf-8").read().strip()
        # the secret's credentials really push
        username, password = secret_login(namespace, host)
        facts = archive(tmp_path)
        pushed = run_module("datarobot_mlops.management_agent.pps_image", {
            "src": str(facts.path), "name": f"{host}/mlops/frozen-models", "tag": uuid.uuid4().hex[:8],
            "username": username, "password": password, "ca_path": rig["RIG_REGISTRY_CA"], "cache": ""})
        assert not pushed.failed, pushed.result.get("msg")
        again = run_playbook(PLAYBOOK, extra_vars=tls_vars(rig, namespace))
        assert again.returncode == 0 and again.changed == 0
        rotated = run_playbook(PLAYBOOK, extra_vars={**tls_vars(rig, namespace), "registry_password": "rotated"})
        assert rotated.task("Push credentials for the image builder (dockerconfigjson)")["changed"] is True
        assert secret_login(namespace, host) == (rig["RIG_REGISTRY_USER"], "rotated")
        assert "rotated" not in rotated.stdout + rotated.stderr
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_http_registry_is_listed_as_insecure(rig):
    namespace = f"t-registry-{uuid.uuid4().hex[:6]}"
    try:
        run = run_playbook(PLAYBOOK, extra_vars={"registry_namespace": namespace,
                                                 "registry_host": rig["RIG_INSECURE_REGISTRY"],
                                                 "registry_insecure": True, "registry_username": "",
                                                 "registry_password": "", "registry_ca_path": ""})
        assert run.returncode == 0, run.failure()
        builder = run.task(FACTS)["ansible_facts"]["management_agent_image_builder"]
        assert builder["insecureRegistries"] == [rig["RIG_INSECURE_REGISTRY"]]
        assert builder["secretName"] == "" and builder["extraArgs"] == []
        assert kubectl("-n", namespace, "get", "secret", "registry-creds", check=False).returncode != 0
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_check_mode_changes_nothing(rig):
    namespace = f"t-registry-{uuid.uuid4().hex[:6]}"
    run = run_playbook(PLAYBOOK, extra_vars=tls_vars(rig, namespace), check=True)
    assert run.returncode == 0, run.failure()
    assert run.changed > 0
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0


def test_bad_variables_fail_before_anything(rig):
    namespace = f"t-registry-{uuid.uuid4().hex[:6]}"
    unknown = run_playbook(PLAYBOOK, extra_vars={**tls_vars(rig, namespace), "registry_vendor": "quay"})
    assert unknown.returncode != 0 and "registry_vendor" in unknown.failure() and "quay" in unknown.failure()
    missing = run_playbook(PLAYBOOK, extra_vars={"registry_namespace": namespace, "registry_host": ""})
    assert missing.returncode != 0 and missing.failure().startswith("registry_host is empty")
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0
