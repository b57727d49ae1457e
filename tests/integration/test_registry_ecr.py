"""The registry role's ecr vendor against moto's server (AWS) and the rig's API server (Kubernetes).

moto answers ECR and IAM like AWS, so repositories, the IRSA role, its trust policy and attached policy, and the
authorization token are real API round trips. What moto cannot show: that EKS's webhook injects credentials for the
annotated ServiceAccount, that Kaniko's ecr-login helper pushes, and that a push to <account>.dkr.ecr.* works
(moto's registry host does not exist).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from ansible_cli import ansible_env, run_playbook
from conftest import kubectl

PLAYBOOK = "playbooks/registry.yml"
FACTS = "Publish the chart's imageBuilder values and the repository paths"
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
AWS = {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": "moto-secret-canary", "AWS_REGION": "us-east-1"}
REPOSITORIES = ["datarobot/mlops-management-agent", "datarobot/mlops-tracking-agent",
                "datarobot/datarobot-portable-prediction-api", "mlops/frozen-models"]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's server on a loopback port, with AWS's managed policies loaded (AmazonEC2ContainerRegistryPowerUser)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2)  # noqa: S310 - loopback
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"moto_server did not start on {url}", pytrace=False)
            time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(timeout=30)


def aws_client(moto, service):
    return boto3.client(service, endpoint_url=moto, region_name="us-east-1", aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def target(new_namespace):
    return new_namespace("t-ecr")


def ecr_vars(moto, namespace, **extra):
    return {"mlops_registry_vendor": "ecr", "mlops_namespace": namespace, "mlops_registry_host": "", "mlops_registry_username": "",
            "mlops_registry_password": "", "mlops_registry_ca_path": "", "mlops_registry_aws_endpoint_url": moto,
            "mlops_registry_ecr_region": "us-east-1", "mlops_registry_ecr_oidc_issuer": f"https://{ISSUER}",
            "mlops_registry_ecr_role_name": f"image-builder-{namespace}", **extra}


def run(moto, namespace, **kwargs):
    return run_playbook(PLAYBOOK, extra_vars=ecr_vars(moto, namespace, **kwargs.pop("extra", {})),
                        env=ansible_env(**AWS), **kwargs)


def test_ecr_repositories_irsa_role_and_kaniko_config(moto, target):
    first = run(moto, target)
    assert first.returncode == 0, first.failure() + first.stderr[-2000:]
    names = {repo["repositoryName"] for repo in aws_client(moto, "ecr").describe_repositories()["repositories"]}
    assert set(REPOSITORIES) <= names
    iam = aws_client(moto, "iam")
    role = iam.get_role(RoleName=f"image-builder-{target}")["Role"]
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"]["Federated"] == f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"]["StringEquals"] == {
        f"{ISSUER}:sub": f"system:serviceaccount:{target}:datarobot-management-agent-image-builder",
        f"{ISSUER}:aud": "sts.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [policy["PolicyArn"] for policy in attached] == [
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPowerUser"]
    account = json.loads(kubectl("-n", target, "get", "serviceaccount", "datarobot-management-agent-image-builder",
                                 "-o", "json").stdout)
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role["Arn"]
    config = json.loads(kubectl("-n", target, "get", "configmap", "docker-config", "-o", "json").stdout)
    assert json.loads(config["data"]["config.json"]) == {"credsStore": "ecr-login"}
    builder = first.task(FACTS)["ansible_facts"]["__registry_published"]["image_builder"]
    assert builder["configMap"] == "docker-config" and builder["secretName"] == ""
    assert builder["serviceAccount"] == {"create": False, "name": "datarobot-management-agent-image-builder",
                                         "annotations": {}}
    # the push credentials are ECR's token, never shown
    token = aws_client(moto, "ecr").get_authorization_token()["authorizationData"][0]
    assert "auth-token" not in first.stdout + first.stderr and token["authorizationToken"] not in first.stdout
    again = run(moto, target)
    assert again.returncode == 0 and again.changed == 0, [
        task["task"]["name"] for play in again.document["plays"] for task in play["tasks"]
        if any(host.get("changed") for host in task["hosts"].values())]


def test_ecr_check_mode_creates_nothing(moto, target):
    checked = run(moto, target, check=True, extra={"mlops_registry_ecr_role_name": f"checked-{target}"})
    assert checked.returncode == 0, checked.failure()
    assert checked.changed > 0
    assert "checked-" + target not in [role["RoleName"] for role in aws_client(moto, "iam").list_roles()["Roles"]]
    assert kubectl("get", "namespace", target, check=False).returncode != 0


def test_ecr_needs_the_oidc_issuer_or_a_role(moto, target):
    missing = run(moto, target, extra={"mlops_registry_ecr_oidc_issuer": ""})
    assert missing.returncode != 0 and "mlops_registry_ecr_oidc_issuer" in missing.failure()
    assert kubectl("get", "namespace", target, check=False).returncode != 0


def test_ecr_with_an_existing_role_creates_no_role(moto, target):
    arn = "arn:aws:iam::123456789012:role/made-by-the-platform-team"
    before = {role["RoleName"] for role in aws_client(moto, "iam").list_roles()["Roles"]}
    run_ = run(moto, target, extra={"mlops_registry_ecr_oidc_issuer": "", "mlops_registry_ecr_role_arn": arn})
    assert run_.returncode == 0, run_.failure()
    assert {role["RoleName"] for role in aws_client(moto, "iam").list_roles()["Roles"]} == before
    account = json.loads(kubectl("-n", target, "get", "serviceaccount", "datarobot-management-agent-image-builder",
                                 "-o", "json").stdout)
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == arn
