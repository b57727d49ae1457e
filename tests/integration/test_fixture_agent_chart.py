"""The agent tarball stand-in (tests/fixtures/agent_tarball) behaves like the vendor's.

Later suites install "the vendor chart" and run "make push" from it; these tests make
sure that what they get is a chart that lints, renders every SPEC §1 key, installs
on the rig, and image Makefiles that really push through the Docker API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from conftest import REPO, kubectl
from fixtures.agent_tarball import build_agent_tarball, chart_dir

CHART = chart_dir()
TOOLS = CHART.parents[1]
IB_SA = "datarobot-management-agent-image-builder"
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([os.environ["HELM"], *args], capture_output=True, text=True, check=False, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def render(*args: str, namespace: str = "datarobot-mlops") -> dict[tuple[str, str], dict]:
    """`helm template` as {(kind, name): object}."""
    out = helm("template", "bosun", str(CHART), "-n", namespace, *args).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def agent_config(objects: dict) -> dict:
    return yaml.safe_load(objects["ConfigMap", "bosun-datarobot-management-agent"]["data"]["config.yaml"])


def container(objects: dict, deployment: str) -> dict:
    return objects["Deployment", deployment]["spec"]["template"]["spec"]["containers"][0]


def env_of(objects: dict, deployment: str) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects, deployment)["env"]}


# ---------------------------------------------------------------- chart: lint and render


def test_chart_lints_with_defaults_and_every_example(rig):
    examples = sorted((CHART / "examples").glob("*_values.yaml"))
    assert [p.name for p in examples] == ["AWS_values.yaml", "Azure_values.yaml", "GCP_values.yaml",
                                          "OpenShift_values.yaml", "generic_values.yaml"]
    for extra in ([], *(["--values", str(p)] for p in examples)):
        assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART), *extra).stdout
    # values.schema.json gives lint teeth: a list key given as a string is refused.
    bad = helm("lint", "--strict", str(CHART), "--set", "imageBuilder.insecureRegistries=oops", check=False)
    assert bad.returncode != 0 and "insecureRegistries" in bad.stdout + bad.stderr


def test_defaults_render_the_vendor_objects(rig):
    objects = render()
    agent = "bosun-datarobot-management-agent"
    assert set(objects) == {
        ("Deployment", agent), ("Deployment", "bosun-datarobot-tracking-agent"), ("ConfigMap", agent),
        ("ServiceAccount", agent), ("Role", agent), ("RoleBinding", agent), ("ServiceAccount", IB_SA)}
    deployment = objects["Deployment", agent]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "management-agent"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == agent
    assert container(objects, agent)["image"] == "datarobot/mlops-management-agent:9.2.0"
    env = env_of(objects, agent)
    assert env["MLOPS_SERVICE_URL"] == "https://app.datarobot.com"
    assert env["MLOPS_API_TOKEN"] == {"secretKeyRef": {"name": "mlops-api-key", "key": "secret"}}
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "config", "configMap": {"name": agent}}]
    assert container(objects, "bosun-datarobot-tracking-agent")["image"] == "datarobot/mlops-tracking-agent:9.2.0"
    rules = {(group, resource) for rule in objects["Role", agent]["rules"]
             for group in rule["apiGroups"] for resource in rule["resources"] if "create" in rule["verbs"]}
    assert {("", "pods"), ("apps", "deployments"), ("", "services"), ("networking.k8s.io", "ingresses"),
            ("", "configmaps"), ("", "secrets"), ("batch", "jobs")} <= rules
    config = agent_config(objects)
    assert config["kubernetes"] == {"namespace": "datarobot-mlops", "ingressClassName": "mlops",
                                    "outfacingUrlRoot": "", "trackingAgentEnabled": True}
    assert config["imageBuilder"]["serviceAccountName"] == IB_SA
    assert config["imageBuilder"]["generatedImageRepository"] == "mlops/frozen-models"


def test_every_value_key_reaches_the_agent(rig):
    volumes = [{"name": "cacert", "hostPath": {"path": "/etc/docker/certs.d"}}]
    mounts = [{"name": "cacert", "mountPath": "/certs/", "readOnly": True}]
    objects = render(
        "--set", "datarobot.dataRobotUrl=https://dr.example.com", "--set", "datarobot.apiSecretName=my-key",
        "--set", "datarobot.predictionEnvId=64b1f0c2a1b2c3d4e5f60718",
        "--set", "predictionServer.ingressClassName=nginx-x", "--set", "predictionServer.outfacingUrlRoot=https://p/x",
        "--set", "managementAgent.repository=reg:5000/dr/agent", "--set", "managementAgent.tag=9.2.0-1",
        "--set", "managementAgent.replicas=2", "--set", "trackingAgent.enabled=false",
        "--set", "imageBuilder.ppsImage=reg:5000/pps:9.2.0",
        "--set", "imageBuilder.generatedImageRepository=reg:5000/f",
        "--set", "imageBuilder.secretName=creds", "--set", "imageBuilder.configMap=dcfg",
        "--set", "imageBuilder.insecureRegistries={reg:5000}", "--set", "imageBuilder.skipSslVerifyRegistries={a,b}",
        "--set-json", f"imageBuilder.extraVolumes={json.dumps(volumes)}",
        "--set-json", f"imageBuilder.extraVolumeMounts={json.dumps(mounts)}",
        "--set", "imageBuilder.extraArgs={--registry-certificate=reg:5000=/certs/ca.crt}")
    agent = "bosun-datarobot-management-agent"
    assert ("Deployment", "bosun-datarobot-tracking-agent") not in objects
    assert objects["Deployment", agent]["spec"]["replicas"] == 2
    assert container(objects, agent)["image"] == "reg:5000/dr/agent:9.2.0-1"
    env = env_of(objects, agent)
    assert env["MLOPS_SERVICE_URL"] == "https://dr.example.com"
    assert env["MLOPS_API_TOKEN"]["secretKeyRef"]["name"] == "my-key"
    assert env["MLOPS_PREDICTION_ENVIRONMENT_ID"] == "64b1f0c2a1b2c3d4e5f60718"
    config = agent_config(objects)
    assert config["datarobot"] == {"dataRobotUrl": "https://dr.example.com", "apiSecretName": "my-key",
                                   "predictionEnvId": "64b1f0c2a1b2c3d4e5f60718"}
    assert config["kubernetes"]["ingressClassName"] == "nginx-x"
    assert config["kubernetes"]["outfacingUrlRoot"] == "https://p/x"
    assert config["imageBuilder"] == {
        "ppsImage": "reg:5000/pps:9.2.0", "generatedImageRepository": "reg:5000/f", "secretName": "creds",
        "configMap": "dcfg", "serviceAccountName": IB_SA, "insecureRegistries": ["reg:5000"],
        "skipSslVerifyRegistries": ["a", "b"], "extraVolumes": volumes, "extraVolumeMounts": mounts,
        "extraArgs": ["--registry-certificate=reg:5000=/certs/ca.crt"]}
    # A changed config changes the pod template, so the agent restarts on it.
    before = objects["Deployment", agent]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert before != render()["Deployment", agent]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


# Per vendor: what the seed page asks of imageBuilder, and the registry host of the images.
EXAMPLES = {
    "AWS": ({"configMap": "docker-config", "secretName": ""}, False, "123456789012.dkr.ecr.us-east-1.amazonaws.com/"),
    "Azure": ({"secretName": "registry-creds", "configMap": ""}, True, "myregistry.azurecr.io/"),
    "GCP": ({"secretName": "", "configMap": ""}, True, "gcr.io/my-project/"),
    "OpenShift": ({"secretName": "registry-creds",
                   "skipSslVerifyRegistries": ["image-registry.openshift-image-registry.svc:5000"]}, False,
                  "image-registry.openshift-image-registry.svc:5000/datarobot-mlops/"),
    "generic": ({"secretName": "registry-creds", "insecureRegistries": []}, True, "registry.example.com/"),
}


@pytest.mark.parametrize("vendor", sorted(EXAMPLES))
def test_example_values_carry_the_vendor_image_builder_block(rig, vendor):
    expected, creates_sa, host = EXAMPLES[vendor]
    objects = render("--values", str(CHART / "examples" / f"{vendor}_values.yaml"))
    image_builder = agent_config(objects)["imageBuilder"]
    assert {key: image_builder[key] for key in expected} == expected
    assert image_builder["serviceAccountName"] == IB_SA
    assert (("ServiceAccount", IB_SA) in objects) is creates_sa
    if vendor == "GCP":
        assert objects["ServiceAccount", IB_SA]["metadata"]["annotations"] == {
            "iam.gke.io/gcp-service-account": "gcr-push-user@my-project.iam.gserviceaccount.com"}
    images = [container(objects, "bosun-datarobot-management-agent")["image"],
              container(objects, "bosun-datarobot-tracking-agent")["image"], image_builder["ppsImage"]]
    assert all(image.startswith(host) for image in images), images
    assert image_builder["generatedImageRepository"].startswith(host)


def test_image_builder_service_account_follows_create_name_and_annotations(rig):
    absent = render("--set", "imageBuilder.serviceAccount.create=false")
    assert not [key for key in absent if key[0] == "ServiceAccount" and key[1] == IB_SA]
    assert agent_config(absent)["imageBuilder"]["serviceAccountName"] == IB_SA
    custom = render("--set", "imageBuilder.serviceAccount.create=true",
                    "--set", "imageBuilder.serviceAccount.name=kaniko",
                    "--set", "imageBuilder.serviceAccount.annotations.example\\.com/role=pusher")
    assert custom["ServiceAccount", "kaniko"]["metadata"]["annotations"] == {"example.com/role": "pusher"}
    assert ("ServiceAccount", IB_SA) not in custom
    assert agent_config(custom)["imageBuilder"]["serviceAccountName"] == "kaniko"


# ---------------------------------------------------------------- chart: on the rig


def _release() -> str:
    # Unique per run: the rig is shared with other sessions.
    return f"fx-{uuid.uuid4().hex[:8]}"


def test_chart_installs_on_the_rig_and_becomes_available(namespace):
    release = _release()
    agent, tracking = f"{release}-datarobot-management-agent", f"{release}-datarobot-tracking-agent"
    kubectl("-n", namespace, "create", "secret", "generic", "mlops-api-key", "--from-literal=secret=not-a-real-token")
    try:
        helm("install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "120s")
        for name in (agent, tracking):
            kubectl("-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=60s")
            status = json.loads(kubectl("-n", namespace, "get", "deployment", name, "-o", "json").stdout)["status"]
            assert status["availableReplicas"] == 1
        kubectl("-n", namespace, "get", "serviceaccount", IB_SA)
        configmap = json.loads(kubectl("-n", namespace, "get", "configmap", agent, "-o", "json").stdout)
        assert yaml.safe_load(configmap["data"]["config.yaml"])["kubernetes"]["namespace"] == namespace
        # The agent's account may manage model workloads in its namespace, and nowhere else.
        who = f"--as=system:serviceaccount:{namespace}:{agent}"
        for verb, resource, where, answer in (("create", "deployments.apps", namespace, "yes"),
                                              ("create", "jobs.batch", namespace, "yes"),
                                              ("create", "ingresses.networking.k8s.io", namespace, "yes"),
                                              ("create", "deployments.apps", "default", "no")):
            got = kubectl("auth", "can-i", verb, resource, "-n", where, who, check=False).stdout.strip()
            assert got == answer, (verb, resource, where, got)
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", check=False)
    assert kubectl("-n", namespace, "get", "deployment", agent, check=False).returncode != 0
    assert kubectl("-n", namespace, "get", "serviceaccount", IB_SA, check=False).returncode != 0


def test_existing_image_builder_account_is_left_alone_with_create_false(namespace):
    """EKS/OpenShift: the account exists before the install (eksctl, oc create sa)."""
    arn = "arn:aws:iam::123456789012:role/image-builder"
    kubectl("-n", namespace, "create", "serviceaccount", IB_SA)
    kubectl("-n", namespace, "annotate", "serviceaccount", IB_SA, f"eks.amazonaws.com/role-arn={arn}")
    kubectl("-n", namespace, "create", "secret", "generic", "mlops-api-key", "--from-literal=secret=not-a-real-token")
    clash, release = _release(), _release()
    try:
        # create=true would take the account over: helm refuses, which is why the AWS example says false.
        refused = helm("install", clash, str(CHART), "-n", namespace,
                       "--set", "imageBuilder.serviceAccount.create=true", check=False)
        assert refused.returncode != 0 and "exists and cannot be imported" in refused.stderr
        helm("uninstall", clash, "-n", namespace, check=False)
        helm("install", release, str(CHART), "-n", namespace, "--values", str(CHART / "examples" / "AWS_values.yaml"),
             "--wait", "--timeout", "120s")
        account = json.loads(kubectl("-n", namespace, "get", "serviceaccount", IB_SA, "-o", "json").stdout)["metadata"]
        assert account["annotations"] == {"eks.amazonaws.com/role-arn": arn}
        assert "app.kubernetes.io/managed-by" not in account.get("labels", {})
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", check=False)
    kubectl("-n", namespace, "get", "serviceaccount", IB_SA)  # still there after uninstall


# ---------------------------------------------------------------- image Makefiles


def _make(tool: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(TOOLS / tool), *args], capture_output=True, text=True, check=False,
                          timeout=600, env={**os.environ, **(env or {})})


def test_make_requires_registry_and_composes_the_image_name():
    missing = _make("bosun_docker", "push", "REGISTRY=", env={"DOCKER": "false"})
    assert missing.returncode != 0 and "REGISTRY is required" in missing.stderr
    plan = _make("bosun_docker", "-n", "push", "REGISTRY=gcr.io", "REPOSITORY_PREFIX=my-project/").stdout
    assert "--tag gcr.io/my-project/datarobot/mlops-management-agent:9.2.0 ." in plan
    assert "push gcr.io/my-project/datarobot/mlops-management-agent:9.2.0" in plan
    plan = _make("agent_docker", "-n", "push", "REGISTRY=r:5000", "VERSION=9.3.1").stdout
    assert "push r:5000/datarobot/mlops-tracking-agent:9.3.1" in plan


def _pushed(tool: str, registry: str, repository: str, base: str, env: dict[str, str], **http) -> None:
    """`make push` with a unique VERSION; the tag must resolve to the image that build made.

    http: auth/verify for requests, per call (a Session's verify loses to REQUESTS_CA_BUNDLE).
    """
    version = f"9.2.0-fixture-{uuid.uuid4().hex[:8]}"
    made = _make(tool, "push", f"REGISTRY={registry}", f"VERSION={version}", env=env)
    try:
        assert made.returncode == 0, made.stdout + made.stderr
        response = requests.get(f"{base}/v2/{repository}/manifests/{version}", headers={"Accept": MANIFEST_TYPES},
                                timeout=30, **http)
        assert response.status_code == 200, response.text
        config_digest = response.json()["config"]["digest"]
        config = requests.get(f"{base}/v2/{repository}/blobs/{config_digest}", timeout=30, **http).json()
        assert config["config"]["Labels"]["org.opencontainers.image.version"] == version
    finally:
        _forget(repository, version, base, env, http)


def _forget(repository: str, version: str, base: str, env: dict[str, str], http: dict) -> None:
    """Leave the shared registry and podman store as they were.

    The unique VERSION label makes this manifest's digest unique, so deleting it by
    digest removes no other tag. podman keeps an image per Dockerfile step; the
    label filter finds the tagged image and its intermediates, and no one else's.
    """
    try:
        head = requests.head(f"{base}/v2/{repository}/manifests/{version}", headers={"Accept": MANIFEST_TYPES},
                             timeout=30, **http)
        if head.status_code == 200:
            requests.delete(f"{base}/v2/{repository}/manifests/{head.headers['Docker-Content-Digest']}",
                            timeout=30, **http)
    finally:
        docker_env = {**os.environ, **env}
        ids = subprocess.run(["docker", "images", "-aq", "--filter",
                              f"label=org.opencontainers.image.version={version}"],
                             capture_output=True, text=True, check=False, env=docker_env, timeout=60).stdout.split()
        for image_id in ids:  # newest first; removing one also removes its untagged parents
            subprocess.run(["docker", "rmi", "--force", image_id], capture_output=True, check=False,
                           env=docker_env, timeout=120)


def test_bosun_docker_push_reaches_the_tls_registry(rig, tmp_path):
    # `docker login` through the Docker API (podman's) into a throw-away config, as a user would.
    env = {"DOCKER_CONFIG": str(tmp_path / "docker"), "DOCKER_HOST": rig["DOCKER_HOST"]}
    login = subprocess.run(["docker", "login", "--username", rig["RIG_REGISTRY_USER"], "--password-stdin",
                            rig["RIG_REGISTRY"]], input=rig["RIG_REGISTRY_PASSWORD"], capture_output=True, text=True,
                           check=False, timeout=60, env={**os.environ, **env})
    assert login.returncode == 0, login.stderr
    _pushed("bosun_docker", rig["RIG_REGISTRY"], "datarobot/mlops-management-agent", f"https://{rig['RIG_REGISTRY']}",
            env, auth=(rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]), verify=rig["RIG_REGISTRY_CA"])


def test_agent_docker_push_reaches_the_http_registry(rig, tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "docker"), "DOCKER_HOST": rig["DOCKER_HOST"]}
    _pushed("agent_docker", rig["RIG_INSECURE_REGISTRY"], "datarobot/mlops-tracking-agent",
            f"http://{rig['RIG_INSECURE_REGISTRY']}", env)


# ---------------------------------------------------------------- the tarball


def test_tarball_is_shaped_like_the_vendor_one_and_reproducible(rig, tmp_path):
    first = build_agent_tarball(tmp_path / "a")
    assert first.name == "datarobot-mlops-agent-9.2.0.tar.gz"
    assert first.read_bytes() == build_agent_tarball(tmp_path / "b").read_bytes()
    cli = subprocess.run([sys.executable, str(REPO / "tests" / "fixtures" / "agent_tarball.py"), str(tmp_path / "c"),
                          "9.3.0"], capture_output=True, text=True, check=True, timeout=60)
    other = Path(cli.stdout.strip())
    assert other == tmp_path / "c" / "datarobot-mlops-agent-9.3.0.tar.gz"
    with tarfile.open(other) as tar:
        names = tar.getnames()
        assert names == sorted(names) and all(n.split("/")[0] == "datarobot-mlops-agent-9.3.0" for n in names)
        assert {m.mtime for m in tar.getmembers()} == {tar.getmembers()[0].mtime}
        tar.extractall(tmp_path / "x", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    top = tmp_path / "x" / "datarobot-mlops-agent-9.3.0"
    for part in ("tools/bosun_docker/Makefile", "tools/agent_docker/Makefile",
                 "tools/charts/datarobot-management-agent/Chart.yaml",
                 "tools/charts/datarobot-management-agent/examples/OpenShift_values.yaml"):
        assert (top / part).is_file(), part
    chart = top / "tools" / "charts" / "datarobot-management-agent"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"] == "9.3.0"
    assert "0 chart(s) failed" in helm("lint", "--strict", str(chart)).stdout
    assert "datarobot/mlops-management-agent:9.3.0" in helm("template", "bosun", str(chart)).stdout
