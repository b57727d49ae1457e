"""The registry role on the rig: generic vendor on its TLS and HTTP registries, acr, and gar (Artifact Registry)
with inventories/gcp's own values and a local Google token endpoint."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests
import yaml

from ansible_cli import REPO, ansible_env, run_module, run_playbook
from conftest import kubectl
from google_token_endpoint import TokenEndpoint
from test_pps_image import archive
from token_registry import TokenRegistry

PLAYBOOK = "playbooks/registry.yml"
FACTS_PLAYBOOK = "tests/integration/playbooks/registry_facts.yml"
SERVICE_ACCOUNT = "gar-push@my-project.iam.gserviceaccount.com"
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


def gcp_inventory_run(rig, target, tmp_path, endpoint, playbook=FACTS_PLAYBOOK, **extra):
    """inventories/gcp as shipped: only the namespace and the cluster (the rig, not a GKE context) are changed, and
    Application Default Credentials name a service-account key whose token_uri is the local token endpoint."""
    key = tmp_path / "key.json"
    if not key.exists():  # one key per test: the endpoint may be told to forget it
        endpoint.write_key(tmp_path, endpoint.account(SERVICE_ACCOUNT))
    facts = tmp_path / "facts.json"
    facts.unlink(missing_ok=True)
    run = run_playbook(playbook, inventory="inventories/gcp", env=ansible_env(GOOGLE_APPLICATION_CREDENTIALS=str(key)),
                       extra_vars={"mlops_namespace": target, "mlops_cluster_env": {"K8S_AUTH_KUBECONFIG": rig["KUBECONFIG"]},
                                   "facts_out": str(facts), **extra})
    return run, (json.loads(facts.read_text()) if facts.exists() else {})


def test_gar_inventory_mints_the_push_token_and_points_kaniko_at_no_secret(rig, target, tmp_path):
    inventory = yaml.safe_load((REPO / "inventories/gcp/group_vars/clusters/main.yml").read_text())
    assert inventory["mlops_registry_vendor"] == "gar" and inventory["mlops_registry_host"].endswith("-docker.pkg.dev")
    assert "mlops_registry_password" not in inventory and "mlops_registry_username" not in inventory
    with TokenEndpoint() as endpoint:
        first, published = gcp_inventory_run(rig, target, tmp_path, endpoint)
        assert first.returncode == 0, first.failure() + first.stderr[-2000:]
        # our pushes: user oauth2accesstoken and the token the endpoint just issued for the key's signed JWT
        assert len(endpoint.issued) == 1 and endpoint.issued[0]["claims"]["iss"] == SERVICE_ACCOUNT
        token = endpoint.issued[0]["token"]
        registry = published["registry"]
        assert (registry["host"], registry["username"], registry["password"]) == (
            inventory["mlops_registry_host"], "oauth2accesstoken", token)
        assert registry["repositories"]["pps"] == \
            f"{inventory['mlops_registry_path_prefix']}datarobot/datarobot-portable-prediction-api"
        assert token not in first.stdout + first.stderr
        # Kaniko: Workload Identity on the chart's ServiceAccount, and no secret named that does not exist
        builder = published["image_builder"]
        assert builder["secretName"] == "" and builder["configMap"] == ""
        assert builder["serviceAccount"] == {
            "create": True, "name": "datarobot-management-agent-image-builder",
            "annotations": {"iam.gke.io/gcp-service-account": "gar-push@my-project.iam.gserviceaccount.com"}}
        assert kubectl("-n", target, "get", "secrets", "-o", "name").stdout.split() == []
        # a scheduled run later mints a new token: nothing kept, nothing changed
        again, republished = gcp_inventory_run(rig, target, tmp_path, endpoint)
        assert again.returncode == 0, again.failure()
        assert [task["task"]["name"] for play in again.document["plays"] for task in play["tasks"]
                if any(host.get("changed") for host in task["hosts"].values())] == ["Save the facts"]
        assert len(endpoint.issued) == 2 and republished["registry"]["password"] == endpoint.issued[1]["token"] != token
        # a deleted key: the run stops at the token and says why
        endpoint.accounts.clear()
        revoked, _facts = gcp_inventory_run(rig, target, tmp_path, endpoint, playbook=PLAYBOOK)
        assert revoked.returncode != 0
        assert revoked.failure().startswith(f"Google refused to issue an access token for service account {SERVICE_ACCOUNT}")


def test_gcr_alias_with_a_given_token_mints_none(rig, target, tmp_path):
    with TokenEndpoint() as endpoint:
        run, published = gcp_inventory_run(rig, target, tmp_path, endpoint, mlops_registry_vendor="gcr",
                                           mlops_registry_host="gcr.io", mlops_registry_path_prefix="my-project/",
                                           mlops_registry_password="given-access-token")
        assert run.returncode == 0, run.failure()
        assert endpoint.issued == []
        assert (published["registry"]["username"], published["registry"]["password"]) == (
            "oauth2accesstoken", "given-access-token")
        assert published["image_builder"]["secretName"] == ""
        assert published["image_builder"]["serviceAccount"]["annotations"] == {
            "iam.gke.io/gcp-service-account": "gar-push@my-project.iam.gserviceaccount.com"}
        assert "given-access-token" not in run.stdout + run.stderr
    missing = run_playbook(PLAYBOOK, extra_vars={"mlops_namespace": target, "mlops_registry_vendor": "gar",
                                                 "mlops_registry_host": "us-central1-docker.pkg.dev"})
    assert "mlops_registry_vendor gar needs mlops_registry_gcp_project and mlops_registry_gcp_service_account" in missing.failure()


def test_image_builder_secret_for_the_token_auth_registry(rig, target):
    """The dockerconfigjson Kaniko pushes with holds a login the rig's token service accepts for a push token."""
    registry = TokenRegistry(rig)
    run = run_playbook(PLAYBOOK, extra_vars={
        "mlops_namespace": target, "mlops_registry_host": registry.address, "mlops_registry_username": registry.username,
        "mlops_registry_password": registry.password, "mlops_registry_ca_path": registry.ca_path})
    assert run.returncode == 0, run.failure()
    assert registry.password not in run.stdout + run.stderr
    username, password = secret_login(target, registry.address)
    answer = requests.get(registry.realm, params={"service": "rig-token-registry",
                                                  "scope": "repository:datarobot/mlops-management-agent:pull,push"},
                          auth=(username, password), verify=registry.ca_path, timeout=30)
    assert answer.status_code == 200 and answer.json()["token"]


@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_secret_key_and_organisation_paths(rig, target, host):
    """Docker Hub under any of its names: the secret's key is the one Kaniko and docker read for it, image
    references say docker.io, and repositories are <organisation>/<name>."""
    run = run_playbook(PLAYBOOK, extra_vars={
        "mlops_namespace": target, "mlops_registry_host": host, "mlops_registry_username": "acme-bot",
        "mlops_registry_password": "hub-access-token", "mlops_registry_path_prefix": "acme/"})
    assert run.returncode == 0, run.failure()
    secret = json.loads(kubectl("-n", target, "get", "secret", "registry-creds", "-o", "json").stdout)
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert list(auths) == ["https://index.docker.io/v1/"]
    assert base64.b64decode(auths["https://index.docker.io/v1/"]["auth"]).decode() == "acme-bot:hub-access-token"
    published = run.task(FACTS)["ansible_facts"]["__registry_published"]
    assert published["repositories"] == {
        "management_agent": "acme/mlops-management-agent", "tracking_agent": "acme/mlops-tracking-agent",
        "pps": "acme/datarobot-portable-prediction-api", "frozen_models": "acme/frozen-models"}
    assert "hub-access-token" not in run.stdout + run.stderr


def test_docker_hub_without_an_organisation_is_refused_before_anything(rig, target):
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_namespace": target, "mlops_registry_host": "docker.io",
                                             "mlops_registry_path_prefix": "acme/team/"})
    assert run.returncode != 0
    assert ("Docker Hub repositories are <organisation or user>/<name>, and 'acme/team/mlops-management-agent' is not"
            in run.failure()), run.failure()
    assert kubectl("get", "namespace", target, check=False).returncode != 0
