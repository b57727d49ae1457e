"""The rig behaves like the real parts it is made of (issue: local rig)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from typing import NamedTuple

import pytest
import requests

from conftest import REPO, kubectl
from fixtures.image_archives import write_docker_archive

INGRESS_NGINX_CHART = REPO / "tests" / "rig" / "assets" / "ingress-nginx-4.15.1.tgz"
TINY_CHART = REPO / "tests" / "fixtures" / "charts" / "tiny"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([os.environ["HELM"], *args], capture_output=True, text=True, check=False, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def test_deployment_with_two_replicas_becomes_available(namespace):
    kubectl("-n", namespace, "create", "deployment", "web", "--image=registry.invalid/web:1", "--replicas=2")
    kubectl("-n", namespace, "wait", "--for=condition=Available", "deployment/web", "--timeout=60s")
    status = json.loads(kubectl("-n", namespace, "get", "deployment", "web", "-o", "json").stdout)["status"]
    assert status["availableReplicas"] == 2
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
    assert {pod["spec"]["nodeName"] for pod in pods} <= {"rig-node-1", "rig-node-2", "rig-node-3"}


def test_an_image_tagged_does_not_exist_stays_in_image_pull_backoff(namespace):
    """tests/rig/kwok-stages/image-pull-backoff.yaml wins over kwok's pod-ready stage, and only for such pods."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "broken"},
           "spec": {"containers": [{"name": "agent", "image": "registry.invalid/agent:does-not-exist"},
                                   {"name": "sidecar", "image": "registry.invalid/sidecar:1"}]}}
    kubectl("-n", namespace, "create", "-f", "-", stdin=json.dumps(pod))
    kubectl("-n", namespace, "create", "deployment", "fine", "--image=registry.invalid/fine:1")
    kubectl("-n", namespace, "wait", "--for=condition=Available", "deployment/fine", "--timeout=60s")
    kubectl("-n", namespace, "wait", "--for=jsonpath={.status.containerStatuses[0].state.waiting.reason}"
            "=ImagePullBackOff", "pod/broken", "--timeout=60s")
    time.sleep(2)  # kwok has played every stage it would by now: the pod must still not be ready
    status = json.loads(kubectl("-n", namespace, "get", "pod", "broken", "-o", "json").stdout)["status"]
    assert status["phase"] == "Pending"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"
    states = {c["name"]: (c["ready"], c["state"]) for c in status["containerStatuses"]}
    assert states["agent"][0] is False and states["agent"][1]["waiting"]["reason"] == "ImagePullBackOff"
    assert states["sidecar"][0] is True and "running" in states["sidecar"][1]
    events = json.loads(kubectl("-n", namespace, "get", "events", "--field-selector",
                                "involvedObject.name=broken,type=Warning", "-o", "json").stdout)["items"]
    assert any(event["message"] == "Error: ImagePullBackOff" for event in events)


def test_job_completes(namespace):
    kubectl("-n", namespace, "create", "job", "once", "--image=registry.invalid/once:1", "--", "true")
    kubectl("-n", namespace, "wait", "--for=condition=Complete", "job/once", "--timeout=60s")


def test_nodes_are_sized_like_the_vendor_minimum(rig):
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) == 3
    for node in nodes:
        assert node["status"]["allocatable"]["cpu"] == "2"
        assert node["status"]["allocatable"]["memory"] == "6Gi"
        assert node["status"]["allocatable"]["ephemeral-storage"] == "40Gi"


def test_helm_installs_and_uninstalls_a_chart_with_wait(namespace):
    helm("install", "tiny", str(TINY_CHART), "-n", namespace, "--wait", "--timeout", "90s")
    assert json.loads(helm("status", "tiny", "-n", namespace, "-o", "json").stdout)["info"]["status"] == "deployed"
    kubectl("-n", namespace, "get", "deployment", "tiny-tiny")
    helm("uninstall", "tiny", "-n", namespace, "--wait")
    assert kubectl("-n", namespace, "get", "deployment", "tiny-tiny", check=False).returncode != 0


def test_ingress_nginx_chart_installs_with_the_seed_values(namespace):
    assert os.environ["RIG_INGRESS_NGINX_CHART"] == str(INGRESS_NGINX_CHART)  # what the local inventory installs
    helm("install", "rig-ingress", str(INGRESS_NGINX_CHART), "-n", namespace, "--wait", "--timeout", "180s",
         "--set", "controller.autoscaling.enabled=true",
         "--set", "controller.autoscaling.minReplicas=2",
         "--set", "controller.autoscaling.maxReplicas=3",
         "--set", "controller.config.proxy-body-size=51m",
         "--set", "controller.config.proxy-read-timeout=605",
         "--set", "controller.config.proxy-send-timeout=605",
         "--set", "controller.config.proxy-connect-timeout=65",
         "--set", "controller.metrics.enabled=true",
         "--set", "controller.ingressClassResource.name=mlops-" + namespace,
         "--set", "controller.ingressClass=mlops-" + namespace,
         # rig differences (docs/testing.md): no webhook server, no load balancer
         "--set", "controller.admissionWebhooks.enabled=false",
         "--set", "controller.service.type=ClusterIP")
    deployments = json.loads(kubectl("-n", namespace, "get", "deployments", "-o", "json").stdout)["items"]
    controller = next(d for d in deployments if d["metadata"]["name"].endswith("controller"))
    conditions = {c["type"]: c["status"] for c in controller["status"]["conditions"]}
    assert conditions["Available"] == "True"
    config = json.loads(kubectl("-n", namespace, "get", "configmap", "rig-ingress-ingress-nginx-controller",
                                "-o", "json").stdout)["data"]
    assert config["proxy-body-size"] == "51m" and config["proxy-read-timeout"] == "605"
    hpa = json.loads(kubectl("-n", namespace, "get", "hpa", "-o", "json").stdout)["items"][0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 3)
    helm("uninstall", "rig-ingress", "-n", namespace, "--wait")


def test_service_account_gets_a_token_through_token_request(namespace):
    kubectl("-n", namespace, "create", "serviceaccount", "builder")
    token = kubectl("-n", namespace, "create", "token", "builder", "--duration=10m").stdout.strip()
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["sub"] == f"system:serviceaccount:{namespace}:builder"
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    answer = json.loads(kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(review)).stdout)
    assert answer["status"]["authenticated"] is True
    assert answer["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:builder"


def test_dockerconfigjson_secret_round_trips(namespace):
    kubectl("-n", namespace, "create", "secret", "docker-registry", "registry-creds",
            "--docker-server=registry.example:5000", "--docker-username=user", "--docker-password=s3cret")
    secret = json.loads(kubectl("-n", namespace, "get", "secret", "registry-creds", "-o", "json").stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auth = config["auths"]["registry.example:5000"]
    assert base64.b64decode(auth["auth"]).decode() == "user:s3cret"


def test_rbac_is_enforced(namespace):
    kubectl("-n", namespace, "create", "serviceaccount", "nobody")
    denied = kubectl("auth", "can-i", "create", "deployments", "-n", namespace,
                     f"--as=system:serviceaccount:{namespace}:nobody", check=False)
    assert denied.stdout.strip() == "no"
    kubectl("-n", namespace, "create", "rolebinding", "nobody-edit", "--clusterrole=edit",
            f"--serviceaccount={namespace}:nobody")
    allowed = kubectl("auth", "can-i", "create", "deployments", "-n", namespace,
                      f"--as=system:serviceaccount:{namespace}:nobody", check=False)
    assert allowed.stdout.strip() == "yes"


# --- registries -------------------------------------------------------------------------------------------

class Registry(NamedTuple):
    base: str
    auth: tuple[str, str]
    ca: str


def _registry(rig) -> Registry:
    return Registry(f"https://{rig['RIG_REGISTRY']}", (rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]),
                    rig["RIG_REGISTRY_CA"])


def _push_blob(base: str, repo: str, data: bytes, **kwargs) -> requests.Response:
    start = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=30, **kwargs)
    if start.status_code != 202:
        return start
    location = start.headers["Location"]
    if location.startswith("/"):
        location = base + location
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return requests.put(location, params={"digest": digest}, data=data, timeout=30,
                        headers={"Content-Type": "application/octet-stream"}, **kwargs)


def test_unauthenticated_push_is_refused(rig):
    registry = _registry(rig)
    answer = _push_blob(registry.base, "rig/anonymous", b"nope", verify=registry.ca)
    assert answer.status_code == 401
    assert "Basic" in answer.headers.get("WWW-Authenticate", "")


def test_wrong_password_is_refused(rig):
    registry = _registry(rig)
    wrong = (registry.auth[0], "wrong")
    assert requests.get(f"{registry.base}/v2/", auth=wrong, verify=registry.ca, timeout=10).status_code == 401


def test_authenticated_push_and_pull_over_tls(rig):
    base, auth, ca = _registry(rig)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    assert _push_blob(base, "rig/push-pull", config, auth=auth, verify=ca).status_code == 201
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
                "layers": []}
    put = requests.put(f"{base}/v2/rig/push-pull/manifests/1.0", data=json.dumps(manifest), auth=auth, verify=ca,
                       headers={"Content-Type": manifest["mediaType"]}, timeout=30)
    assert put.status_code == 201, put.text
    got = requests.get(f"{base}/v2/rig/push-pull/manifests/1.0", auth=auth, verify=ca, timeout=30,
                       headers={"Accept": manifest["mediaType"]})
    assert got.status_code == 200 and json.loads(got.content)["config"] == manifest["config"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{base}/v2/", auth=auth, timeout=10)  # the rig's CA is not in the system store


def test_http_registry_works_only_when_declared_insecure(rig, tmp_path):
    archive = write_docker_archive(tmp_path / "img.tar", ["rig/insecure:1.0"], [{"hello": b"world"}])
    target = f"docker://{rig['RIG_INSECURE_REGISTRY']}/rig/insecure:1.0"
    refused = subprocess.run(["skopeo", "copy", "--dest-tls-verify=true", f"docker-archive:{archive.path}", target],
                             capture_output=True, text=True, check=False, timeout=120)
    assert refused.returncode != 0 and "http" in refused.stderr.lower()
    allowed = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"docker-archive:{archive.path}", target],
                             capture_output=True, text=True, check=False, timeout=120)
    assert allowed.returncode == 0, allowed.stderr
    tags = requests.get(f"http://{rig['RIG_INSECURE_REGISTRY']}/v2/rig/insecure/tags/list", timeout=10).json()
    assert tags["tags"] == ["1.0"]


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_docker_sdk_loads_tags_and_pushes_through_podman(rig, tmp_path, layout):
    import docker

    archive = write_docker_archive(tmp_path / "img.tar", [f"local/sdk-{layout}:1.0"],
                                   [{"app/hello.txt": b"hello " + layout.encode()}], layout=layout)
    client = docker.DockerClient(base_url=rig["DOCKER_HOST"], timeout=300)
    try:
        loaded = client.images.load(archive.path.read_bytes())
        assert loaded and loaded[0].id == archive.config_digest
        repository = f"{rig['RIG_REGISTRY']}/rig/sdk-{layout}"
        assert loaded[0].tag(repository, "1.0")
        auth = {"username": rig["RIG_REGISTRY_USER"], "password": rig["RIG_REGISTRY_PASSWORD"]}
        events = list(client.images.push(repository, "1.0", auth_config=auth, stream=True, decode=True))
        errors = [e for e in events if "error" in e or "errorDetail" in e]
        assert not errors, errors
    finally:
        client.close()
    base, auth_tuple, ca = _registry(rig)
    manifest = requests.get(f"{base}/v2/rig/sdk-{layout}/manifests/1.0", auth=auth_tuple, verify=ca, timeout=30,
                            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                                               "application/vnd.oci.image.manifest.v1+json"})
    assert manifest.status_code == 200
    assert manifest.json()["config"]["digest"] == archive.config_digest
