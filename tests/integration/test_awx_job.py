"""site.yml run the way AWX runs a job, on the rig: ansible-runner over a private data directory that holds the survey
answers and the job template's extra vars (env/extravars), and the injectors of awx/credential_types.yml rendered as
AWX renders them (tests/awx_job.py): environment variables, private files, extra-vars files.

Three clusters share one AWX registry credential: one names its own registry and login in the inventory, one names
nothing, one names another registry without a login. Each must keep what its inventory says, the one without gets
the credential's, and the credential's password must reach no other registry. No secret may land in the runner's
artifacts: job events, stdout, the command with its environment.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

from ansible_cli import REPO
from awx_job import (Injected, credential_types, execution_environment, inject, run_job, secrets_in,
                     template_extra_vars)
from conftest import kubectl

TAGS = "registry,prediction_environment"
IMAGE_BUILDER = "Publish the chart's imageBuilder values and the repository paths"


def site_extra_vars() -> dict:
    """The site.yml template's extra vars (awx/job_templates.yml) and the survey's answers, as AWX merges them."""
    # AWX 24 sends an optional question left empty as "" or null: neither may wipe an inventory's value
    return template_extra_vars("site.yml", {"mlops_pps_image_version": "9.2.0",
                                            "mlops_survey_agent_images_method": "present",
                                            "mlops_survey_registry_vendor": "",
                                            "mlops_survey_prediction_environment_name": None,
                                            "mlops_survey_datarobot_endpoint": ""})  # empty: the credential's


@pytest.fixture
def job_dir(tmp_path):
    """The private data directory; AWX deletes it after the job, and so does this fixture (tmp_path)."""
    return tmp_path / "private"


def test_inventory_wins_over_the_credentials_and_no_secret_reaches_the_artifacts(rig, new_namespace, job_dir, ledger):
    own_password, other_password = f"own-{secrets.token_hex(12)}", f"other-{secrets.token_hex(12)}"
    namespaces = {host: new_namespace(f"t-awx-{host}") for host in ("own", "cred", "other")}
    suffix = uuid.uuid4().hex[:6]
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {f"{host}-{suffix}": dict(local, mlops_namespace=namespace) for host, namespace in namespaces.items()}
    own, cred, other = list(hosts)
    hosts[own].update(mlops_registry_host=rig["RIG_INSECURE_REGISTRY"], mlops_registry_insecure=True,
                      mlops_registry_username="own-user", mlops_registry_password=own_password)
    hosts[cred].update(mlops_registry_ca_path=rig["RIG_REGISTRY_CA"])
    hosts[other].update(mlops_registry_host=rig["RIG_INSECURE_REGISTRY"], mlops_registry_insecure=True,
                        mlops_prediction_environment_name=f"awx-inventory-name-{suffix}")

    types, injected = credential_types(), Injected()
    inject(types["DataRobot MLOps API"], {"api_token": rig["DATAROBOT_API_TOKEN"],
           "endpoint": rig["DATAROBOT_ENDPOINT"], "ca_cert": Path(rig["DATAROBOT_CA_PATH"]).read_text()},
           job_dir, injected)
    inject(types["DataRobot MLOps container registry"], {"host": rig["RIG_REGISTRY"],
           "username": rig["RIG_REGISTRY_USER"], "password": rig["RIG_REGISTRY_PASSWORD"]}, job_dir, injected)
    inject(types["DataRobot MLOps kubeconfig"], {"kubeconfig": Path(rig["KUBECONFIG"]).read_text()},
           job_dir, injected)
    job = run_job(job_dir, REPO, "site.yml", inventory={"clusters": {"hosts": hosts}}, extravars=site_extra_vars(),
                  injected=injected, base_env=execution_environment(dict(os.environ)), tags=TAGS)
    assert job.status == "successful", job.process.stdout[-6000:] + job.process.stderr[-2000:]

    builders = {host: result["ansible_facts"]["__registry_published"]["image_builder"]
                for host, result in job.task_results(IMAGE_BUILDER).items()}
    assert set(builders) == set(hosts)
    # The host's own registry and login, not the credential's.
    assert builders[own]["insecureRegistries"] == [rig["RIG_INSECURE_REGISTRY"]]
    assert logins(namespaces["own"]) == {rig["RIG_INSECURE_REGISTRY"]: ("own-user", own_password)}
    # No registry in the inventory: the credential's registry and login.
    assert builders[cred]["secretName"] == "registry-creds"
    assert logins(namespaces["cred"]) == {rig["RIG_REGISTRY"]: (rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"])}
    # Another registry without a login: the credential's login is not sent there.
    assert builders[other]["insecureRegistries"] == [rig["RIG_INSECURE_REGISTRY"]]
    assert builders[other]["secretName"] == ""
    assert kubectl("-n", namespaces["other"], "get", "secret", "registry-creds", check=False).returncode != 0
    # The DataRobot token reached the prediction_environment stage from its file.
    environments = job.task_results("Create or reuse the prediction environment")
    assert set(environments) == set(hosts) and all(result["id"] for result in environments.values())
    # The survey's empty (null) name kept the inventory's, else the role's default.
    names = {host: result["prediction_environment"]["name"] for host, result in environments.items()}
    assert names == {own: f"management-agent-{own}", cred: f"management-agent-{cred}",
                     other: f"awx-inventory-name-{suffix}"}, names

    canaries = {"registry credential password": rig["RIG_REGISTRY_PASSWORD"],
                "DataRobot API token": rig["DATAROBOT_API_TOKEN"], "inventory password": own_password,
                "unused password": other_password}
    canaries.update({f"{name} (base64 login)": base64.b64encode(f"{user}:{value}".encode()).decode()
                     for name, user, value in (("registry credential", rig["RIG_REGISTRY_USER"],
                                                rig["RIG_REGISTRY_PASSWORD"]), ("inventory", "own-user", own_password))})
    hits = secrets_in(job.artifacts, canaries)
    for name in canaries:  # the ledger first (tests/integration/reliability), then the assertion
        where = [hit.split(": ", 1)[0] for hit in hits if hit.split(": ", 1)[1] == name]
        ledger.record("secret", f"AWX job (ansible-runner) artifacts: {name}", held=not where, detail=", ".join(where),
                      count=len(where))
    assert hits == []
    assert {"command", "stdout", "job_events"} <= {path.name for path in job.artifacts.iterdir()}
    assert json.loads((job.artifacts / "command").read_text())["env"]["REGISTRY_HOST"] == rig["RIG_REGISTRY"]


@pytest.mark.parametrize("bound", [True, False], ids=["credential-with-endpoint", "credential-without-endpoint"])
@pytest.mark.parametrize("tags", ["prediction_environment", "management_agent"])
def test_a_survey_endpoint_on_another_host_gets_no_token_of_the_credential(rig, new_namespace, job_dir, tags, bound,
                                                                           ledger):
    """Whoever may launch the job template answers the survey's DataRobot endpoint with a host of theirs: the
    DataRobot credential's token is not sent there (nor written into the cluster for the agent to send), and the job
    stops before its first stage; also from a credential made without an endpoint (optional in its type, whose
    inputs AWX does not let change once credentials use it)."""
    namespace = new_namespace("t-awx-endpoint")
    before = kubectl("-n", namespace, "get", "secret,configmap", "-o", "name").stdout.split()
    with ConnectionCounter() as elsewhere:
        answers = dict(site_extra_vars(), mlops_survey_datarobot_endpoint=elsewhere.url)
        types, injected = credential_types(), Injected()
        inject(types["DataRobot MLOps API"], {"api_token": rig["DATAROBOT_API_TOKEN"],
               "endpoint": rig["DATAROBOT_ENDPOINT"] if bound else "",
               "ca_cert": Path(rig["DATAROBOT_CA_PATH"]).read_text()}, job_dir, injected)
        inject(types["DataRobot MLOps kubeconfig"], {"kubeconfig": Path(rig["KUBECONFIG"]).read_text()},
               job_dir, injected)
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "mlops_namespace": namespace, "mlops_registry_host": rig["RIG_REGISTRY"],
                "mlops_registry_ca_path": rig["RIG_REGISTRY_CA"],
                "mlops_outfacing_url_root": "https://mlops.example.com/deployments/"}
        if tags == "management_agent":  # alone, the agent stage takes the environment's id (DataRobot is not asked)
            host["mlops_prediction_environment_id"] = "0" * 24
        job = run_job(job_dir, REPO, "site.yml", inventory={"clusters": {"hosts": {"cluster": host}}},
                      extravars=answers, injected=injected, base_env=execution_environment(dict(os.environ)),
                      tags=tags)
    stdout = job.process.stdout
    said = " ".join(stdout.split())  # the callback wraps long messages
    refused = (f"which is for the DataRobot at {rig['DATAROBOT_ENDPOINT'].rstrip('/')}" if bound else
               f"The AWX survey names the DataRobot endpoint {elsewhere.url}")
    held = job.status == "failed" and refused in said and elsewhere.connections == 0
    ledger.record("secret", f"AWX survey endpoint on another host ({tags}, {'' if bound else 'no '}endpoint in the "
                  "credential): the credential's DataRobot token not sent there", held=held,
                  detail=f"{job.status}, {elsewhere.connections} connections")
    assert job.status == "failed", stdout[-4000:]
    assert refused in said, stdout[-4000:]
    assert not bound or f"{elsewhere.url}, another host, port or scheme" in said, stdout[-4000:]
    assert elsewhere.connections == 0
    assert kubectl("-n", namespace, "get", "secret,configmap", "-o", "name").stdout.split() == before
    assert secrets_in(job.artifacts, {"DataRobot API token": rig["DATAROBOT_API_TOKEN"]}) == []


class ConnectionCounter:
    """A loopback port that counts the connections made to it (a TLS client's first bytes count too) and answers
    nothing: where a token sent to the wrong host would go."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.url = f"https://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection = self.server.accept()[0]
            except socket.timeout:
                continue
            self.connections += 1
            connection.close()

    def __enter__(self) -> "ConnectionCounter":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()


def logins(namespace: str) -> dict[str, tuple[str, str]]:
    secret = json.loads(kubectl("-n", namespace, "get", "secret", "registry-creds", "-o", "json").stdout)
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    return {host: (entry["username"], entry["password"]) for host, entry in auths.items()}


def test_the_artifact_scan_finds_a_secret_anywhere_under_the_artifacts(tmp_path):
    (tmp_path / "job_events").mkdir()
    (tmp_path / "job_events" / "1-x.json").write_text('{"stdout": "token abc123"}')
    (tmp_path / "command").write_text('{"env": {"X": "other"}}')
    assert secrets_in(tmp_path, {"token": "abc123", "absent": "zzz"}) == ["job_events/1-x.json: token"]
