"""site.yml end to end on the rig: the local inventory, check mode, a fleet, each stage alone, a bad inventory."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid

import pytest

from ansible_cli import REPO, run_playbook
from conftest import cleanup, demo_archives, kubectl, release_status  # noqa: F401 pylint: disable=unused-import
from snapshot import snapshot
from token_registry import TokenRegistry

STAGES = ["preflight", "ingress", "registry", "openshift", "pps_image", "agent_images", "prediction_environment",
          "management_agent"]


def fresh_namespace(prefix: str) -> str:
    return f"t-{prefix}-{uuid.uuid4().hex[:6]}"


def release_revision(namespace: str, release: str = "bosun") -> int:
    status = release_status(namespace, release)
    assert status["info"]["status"] == "deployed"
    return status["version"]


def test_local_inventory_converges_and_stays_converged(rig, demo_archives):
    namespace = fresh_namespace("site")
    try:
        first = run_playbook("site.yml", extra_vars={"mlops_namespace": namespace})
        assert first.returncode == 0, first.failure() + first.stderr[-3000:]
        summary = "\n".join(first.task("What this run left on the cluster")["msg"])
        assert f"bosun in {namespace}, revision 1, deployed" in summary
        assert "sha256:" in summary and "prediction environment: " in summary
        assert release_revision(namespace) == 1
        second = run_playbook("site.yml", extra_vars={"mlops_namespace": namespace})
        assert second.returncode == 0 and second.changed == 0, [
            task["task"]["name"] for play in second.document["plays"] for task in play["tasks"]
            if any(host.get("changed") for host in task["hosts"].values())]
        before = snapshot([namespace, "ingress-mlops"])
        checked = run_playbook("site.yml", extra_vars={"mlops_namespace": namespace}, check=True, diff=True)
        assert checked.returncode == 0 and checked.changed == 0, checked.failure()
        assert snapshot([namespace, "ingress-mlops"]) == before
        assert release_revision(namespace) == 1
    finally:
        cleanup(namespace)


@pytest.mark.parametrize("helm_under_test", ["HELM4"], indirect=True)
def test_site_converges_under_helm_4(rig, demo_archives, helm_under_test):
    """The whole site.yml with helm 4 (the test above is helm 3's), the ingress stage included: preflight accepts
    it, kubernetes.core (6.6.0 in .collections, `make setup`) installs the NGINX controller with it and
    agent_deployment the agent; a second run changes nothing. The controller gets a release, namespace and class
    of its own, so that helm 4 installs it here whatever the helm 3 tests left in ingress-mlops."""
    namespace, ingress = fresh_namespace("site4"), fresh_namespace("ingress4")
    extra = {"mlops_namespace": namespace, "mlops_helm_binary": helm_under_test,
             "mlops_ingress_nginx_namespace": ingress, "mlops_ingress_nginx_class": ingress,
             "mlops_ingress_nginx_release": "nginx4"}
    try:
        first = run_playbook("site.yml", extra_vars=extra)
        assert first.returncode == 0, first.failure() + first.stderr[-3000:]
        assert first.task("Install or upgrade the chart and wait for the controller")["changed"]
        assert f"bosun in {namespace}, revision 1, deployed" in "\n".join(
            first.task("What this run left on the cluster")["msg"])
        assert release_revision(namespace) == 1
        assert release_revision(ingress, "nginx4") == 1
        assert subprocess.run([helm_under_test, "version", "--short"], text=True, capture_output=True,
                              check=True).stdout.startswith("v4.")
        # helm 4 installs with server-side apply (helm 3 never does): the controller's Deployment shows it.
        deployment = json.loads(kubectl("get", "deployment", "-n", ingress, "-l",
                                        "app.kubernetes.io/component=controller", "-o", "json",
                                        "--show-managed-fields").stdout)["items"][0]
        assert {(entry["manager"], entry["operation"]) for entry in deployment["metadata"]["managedFields"]} >= {
            ("helm", "Apply")}, deployment["metadata"]["managedFields"]
        assert kubectl("get", "ingressclass", ingress, check=False).returncode == 0
        second = run_playbook("site.yml", extra_vars=extra)
        assert second.returncode == 0 and second.changed == 0, [
            task["task"]["name"] for play in second.document["plays"] for task in play["tasks"]
            if any(host.get("changed") for host in task["hosts"].values())]
    finally:
        cleanup(namespace)
        cleanup(ingress, "nginx4")
        kubectl("delete", "ingressclass", ingress, check=False)


def test_check_mode_on_a_fresh_namespace_changes_nothing(rig, demo_archives):
    namespace = fresh_namespace("sitecheck")
    before = snapshot([namespace, "ingress-mlops"])
    # A prediction environment DataRobot does not have yet, as on a first run.
    checked = run_playbook("site.yml", extra_vars={"mlops_namespace": namespace,
                                                   "mlops_prediction_environment_name": f"fresh-{namespace}"},
                           check=True, diff=True)
    try:
        assert checked.returncode == 0, checked.failure() + checked.stderr[-3000:]
        assert checked.changed > 0
        assert snapshot([namespace, "ingress-mlops"]) == before
    finally:
        cleanup(namespace)


def test_fleet_runs_clusters_side_by_side_and_one_failure_stays_its_own(rig, demo_archives, tmp_path):
    inventory = tmp_path / "fleet"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO / "inventories/local/group_vars")
    names = {host: fresh_namespace(host) for host in ("east", "west", "broken")}
    hosts = {host: {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    "mlops_namespace": namespace, "mlops_management_agent_release_name": f"bosun-{host}"}
             for host, namespace in names.items()}
    hosts["broken"]["mlops_outfacing_url_root"] = ""  # fails at the last stage's checks
    (inventory / "hosts.yml").write_text(json.dumps({"clusters": {"hosts": hosts}}))
    try:
        run = run_playbook("site.yml", inventory=str(inventory))
        stats = run.document["stats"]
        assert stats["east"]["failures"] == 0 and stats["west"]["failures"] == 0, run.failure()
        assert stats["broken"]["failures"] == 1
        assert release_revision(names["east"], "bosun-east") == 1
        assert release_revision(names["west"], "bosun-west") == 1
        assert subprocess.run([os.environ["HELM"], "status", "bosun-broken", "-n", names["broken"]],
                              capture_output=True, check=False, timeout=60).returncode != 0
    finally:
        for host, namespace in names.items():
            cleanup(namespace, f"bosun-{host}")


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_playbook_runs_alone(rig, demo_archives, stage):
    namespace = fresh_namespace(stage.replace("_", ""))
    extra = {"mlops_namespace": namespace}
    published = {"prediction_environment_id": "65f1c2a9e4b0a1b2c3d4e5f6", "agent_images": {
        "management_agent": {"repository": "registry.invalid/agent", "tag": "9.2.0"},
        "tracking_agent": {"repository": "registry.invalid/tracking", "tag": "9.2.0"}}}
    if stage == "management_agent":  # alone, it is given what the earlier stages would have published
        extra["_mlops"] = published
    try:
        run = run_playbook(f"playbooks/{stage}.yml", extra_vars=extra)
        assert run.returncode == 0, run.failure() + run.stderr[-2000:]
        if stage == "management_agent":  # what was given, and the registry facts the stage looked up itself
            values = json.loads(subprocess.run([os.environ["HELM"], "get", "values", "bosun", "-n", namespace, "-o",
                                                "json"], capture_output=True, text=True, check=True, timeout=60).stdout)
            assert values["datarobot"]["predictionEnvId"] == published["prediction_environment_id"]
            assert values["managementAgent"]["repository"] == "registry.invalid/agent"
            assert values["imageBuilder"]["secretName"] == "registry-creds", values["imageBuilder"]
        again = run_playbook(f"playbooks/{stage}.yml", extra_vars=extra)
        assert again.returncode == 0 and again.changed == 0
    finally:
        cleanup(namespace)


def test_bad_inventory_fails_at_argument_validation_before_anything(rig, demo_archives):
    namespace = fresh_namespace("badinv")
    run = run_playbook("site.yml", extra_vars={"mlops_namespace": namespace,
                                               "mlops_registry_vendor": "quay"})
    assert run.returncode != 0
    failed = [task["task"]["name"] for play in run.document["plays"] for task in play["tasks"]
              if any(host.get("failed") for host in task["hosts"].values())]
    assert failed and "Validating arguments against arg spec" in failed[0], failed
    assert "mlops_registry_vendor" in run.failure() and "quay" in run.failure()
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0


def test_site_against_the_token_auth_registry(rig, demo_archives):
    """One whole run with the rig's token-auth registry as the cluster's registry: preflight's probe, the builder
    secret, the PPS and agent images pushed (by our client and through podman) with Bearer tokens."""
    registry = TokenRegistry(rig).reset()
    namespace = fresh_namespace("sitetoken")
    prefix = f"{namespace}/"
    extra = {"mlops_namespace": namespace, "mlops_registry_host": registry.address,
             "mlops_registry_username": registry.username, "mlops_registry_password": registry.password,
             "mlops_registry_ca_path": registry.ca_path, "mlops_registry_path_prefix": prefix,
             "mlops_preflight_registry": {"host": registry.address, "username": registry.username,
                                          "password": registry.password, "ca_path": registry.ca_path}}
    started = time.monotonic()
    try:
        run = run_playbook("site.yml", extra_vars=extra)
        assert run.returncode == 0, run.failure() + run.stderr[-3000:]
        print(f"site.yml against the token-auth registry: {time.monotonic() - started:.1f}s")
        assert registry.password not in run.stdout + run.stderr
        assert release_revision(namespace) == 1
        values = json.loads(subprocess.run([os.environ["HELM"], "get", "values", "bosun", "-n", namespace, "-o",
                                            "json"], capture_output=True, text=True, check=True, timeout=60).stdout)
        assert values["managementAgent"]["repository"] == \
            f"{registry.address}/{prefix}datarobot/mlops-management-agent"
        secret = json.loads(kubectl("-n", namespace, "get", "secret", "registry-creds", "-o", "json").stdout)
        assert list(json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]) == [registry.address]
        asked = registry.requests
        assert asked and all(request["authorized"] for request in asked)
        scopes = {scope for request in asked for scope in request["scopes"]}
        for path in ("datarobot/mlops-management-agent", "datarobot/mlops-tracking-agent",
                     "datarobot/datarobot-portable-prediction-api"):
            assert f"repository:{prefix}{path}:pull,push" in scopes, scopes
    finally:
        cleanup(namespace)
