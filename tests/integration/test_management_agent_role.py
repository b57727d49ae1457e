"""The management_agent role on the rig: API key secret, values composed from the stages' facts, the release."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

from ansible_cli import run_playbook
from conftest import kubectl
from fixtures.agent_tarball import chart_dir

PLAYBOOK = "tests/integration/playbooks/registry_and_management_agent.yml"
RELEASE_TASK = "The management agent release"


@pytest.fixture
def target(new_namespace):
    return new_namespace("t-agent", release="bosun")


def agent_vars(rig, namespace, **extra):
    return {"mlops_namespace": namespace,
            "mlops_registry_host": rig["RIG_REGISTRY"], "mlops_registry_username": rig["RIG_REGISTRY_USER"],
            "mlops_registry_password": rig["RIG_REGISTRY_PASSWORD"], "mlops_registry_ca_path": rig["RIG_REGISTRY_CA"],
            "mlops_management_agent_chart_ref": str(chart_dir()), "mlops_prediction_environment_id":
            "65f1c2a9e4b0a1b2c3d4e5f6", "mlops_outfacing_url_root": "http://mlops.rig.test/deployments/",
            "mlops_helm_binary": os.environ["HELM"], "mlops_management_agent_wait_timeout": 180, **extra}


def helm_values(namespace):
    proc = subprocess.run([os.environ["HELM"], "get", "values", "bosun", "-n", namespace, "-o", "json"],
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(proc.stdout)


def revisions(namespace):
    proc = subprocess.run([os.environ["HELM"], "history", "bosun", "-n", namespace, "-o", "json"],
                          capture_output=True, text=True, check=True, timeout=60)
    return len(json.loads(proc.stdout))


def api_key(namespace):
    secret = json.loads(kubectl("-n", namespace, "get", "secret", "mlops-api-key", "-o", "json").stdout)
    return base64.b64decode(secret["data"]["secret"]).decode()


def test_install_compose_idempotent_rotate_and_remove(rig, target):
    token = rig["DATAROBOT_API_TOKEN"]
    first = run_playbook(PLAYBOOK, extra_vars=agent_vars(rig, target), verbosity=3)
    assert first.returncode == 0, first.failure() + first.stderr[-3000:]
    assert token not in first.stdout + first.stderr and rig["RIG_REGISTRY_PASSWORD"] not in first.stdout
    assert api_key(target) == token
    values = helm_values(target)
    host = rig["RIG_REGISTRY"]
    assert values["datarobot"] == {"apiSecretName": "mlops-api-key", "predictionEnvId": "65f1c2a9e4b0a1b2c3d4e5f6",
                                   "dataRobotUrl": rig["DATAROBOT_ENDPOINT"].removesuffix("/api/v2")}
    assert values["predictionServer"] == {"ingressClassName": "mlops",
                                          "outfacingUrlRoot": "http://mlops.rig.test/deployments/"}
    assert values["managementAgent"] == {"repository": f"{host}/datarobot/mlops-management-agent", "tag": "9.2.0"}
    assert values["trackingAgent"] == {"enabled": True, "image": f"{host}/datarobot/mlops-tracking-agent:9.2.0"}
    builder = values["imageBuilder"]
    assert builder["ppsImage"] == f"{host}/datarobot/datarobot-portable-prediction-api:9.2.0"
    assert builder["generatedImageRepository"] == f"{host}/mlops/frozen-models"
    assert builder["secretName"] == "registry-creds" and builder["extraArgs"] == [
        f"--registry-certificate={host}=/certs/{host}/ca.crt"]
    deployments = json.loads(kubectl("-n", target, "get", "deployments", "-o", "json").stdout)["items"]
    assert deployments and all(d["status"].get("availableReplicas") == d["spec"]["replicas"] for d in deployments)
    # a second run changes nothing and makes no helm revision
    again = run_playbook(PLAYBOOK, extra_vars=agent_vars(rig, target))
    assert again.returncode == 0 and again.changed == 0, again.stdout[-3000:]
    assert revisions(target) == 1
    # a new token is rotated in place; the release stays as it is
    rotated = run_playbook(PLAYBOOK, extra_vars=agent_vars(rig, target, mlops_datarobot_api_token="rotated-token-canary"))
    assert rotated.returncode == 0, rotated.failure()
    assert api_key(target) == "rotated-token-canary" and revisions(target) == 1
    assert "rotated-token-canary" not in rotated.stdout + rotated.stderr
    # the user's values win over ours: one upgrade
    extra = run_playbook(PLAYBOOK, extra_vars=agent_vars(rig, target, mlops_management_agent_extra_values={
        "managementAgent": {"tag": "9.2.1"}, "predictionServer": {"ingressClassName": "nginx"}}))
    assert extra.returncode == 0, extra.failure()
    values = helm_values(target)
    assert values["managementAgent"]["tag"] == "9.2.1" and values["predictionServer"]["ingressClassName"] == "nginx"
    assert revisions(target) == 2
    # check mode of a change touches nothing
    checked = run_playbook(PLAYBOOK, extra_vars=agent_vars(rig, target, mlops_management_agent_version="9.3.0"),
                           check=True, diff=True)
    assert checked.returncode == 0, checked.failure()
    assert checked.task(RELEASE_TASK)["changed"] is True and revisions(target) == 2
    # removed
    gone = run_playbook(PLAYBOOK, extra_vars=agent_vars(rig, target, mlops_management_agent_state="absent"))
    assert gone.returncode == 0, gone.failure()
    assert subprocess.run([os.environ["HELM"], "status", "bosun", "-n", target], capture_output=True,
                          check=False, timeout=60).returncode != 0


def test_legacy_chart_generation_uses_the_old_key_names(rig, target):
    run = run_playbook(PLAYBOOK, extra_vars=agent_vars(rig, target, mlops_management_agent_chart_generation="legacy"),
                       check=True, diff=True)
    assert run.returncode == 0, run.failure()
    values = run.task("The chart's values")["ansible_facts"]["__management_agent_values"]
    assert values["ingress"] == {"className": "mlops", "outfacingURLPrefix": "http://mlops.rig.test/deployments/"}
    assert values["bosun"]["repository"].endswith("/datarobot/mlops-management-agent")
    assert "tracking" in values and "predictionServer" not in values and "managementAgent" not in values


def test_missing_settings_fail_before_anything_is_created(rig, target):
    run = run_playbook("playbooks/management_agent.yml", extra_vars={
        "mlops_namespace": target, "mlops_outfacing_url_root": "",
        "mlops_management_agent_chart_ref": str(chart_dir())})
    assert run.returncode != 0
    message = run.failure()
    assert "mlops_outfacing_url_root" in message and "mlops_prediction_environment_id" in message
    assert kubectl("get", "namespace", target, check=False).returncode != 0
    latest = run_playbook("playbooks/management_agent.yml", extra_vars={
        **agent_vars(rig, target), "mlops_management_agent_version": "latest"})
    assert latest.returncode != 0 and "mlops_management_agent_version" in latest.failure()


def test_uninstalling_alone_creates_nothing(rig, target):
    """mlops_management_agent_state absent, the stage alone: no registry stage (which would create the namespace and
    the registry secret), nothing to uninstall, nothing created."""
    run = run_playbook("playbooks/management_agent.yml", extra_vars={
        "mlops_namespace": target, "mlops_management_agent_state": "absent", "mlops_helm_binary": os.environ["HELM"]})
    assert run.returncode == 0, run.failure() + run.stderr[-2000:]
    assert kubectl("get", "namespace", target, check=False).returncode != 0
