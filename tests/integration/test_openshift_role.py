"""The registry role's openshift vendor and the openshift role, on the rig's OpenShift flavour.

The flavour has OpenShift's objects but no operators: a thread here plays the registry operator and creates the
default route once `spec.defaultRoute` is true.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading

import pytest

from ansible_cli import ansible_env, run_module, run_playbook
from conftest import demo_archives, kubectl  # noqa: F401 pylint: disable=unused-import
from test_preflight import SURVEY_GRANTS, grant, kubeconfig_of, role_defaults

PLAYBOOK = "tests/integration/playbooks/registry_and_openshift.yml"
SA = "datarobot-management-agent-image-builder"
INTERNAL = "image-registry.openshift-image-registry.svc:5000"
ROUTE_HOST = "default-route-openshift-image-registry.apps.rig.test"


@pytest.fixture
def target(openshift_rig, new_namespace):
    return new_namespace("t-ocp")


@pytest.fixture
def registry_operator(openshift_rig):
    """Creates openshift-image-registry/default-route when the config asks for it; resets both afterwards."""
    stop = threading.Event()

    def operate():
        while not stop.wait(0.5):
            config = json.loads(kubectl("get", "configs.imageregistry.operator.openshift.io", "cluster", "-o", "json")
                                .stdout)
            if config["spec"].get("defaultRoute"):
                route = {"apiVersion": "route.openshift.io/v1", "kind": "Route",
                         "metadata": {"name": "default-route", "namespace": "openshift-image-registry"},
                         "spec": {"host": ROUTE_HOST, "to": {"kind": "Service", "name": "image-registry"},
                                  "tls": {"termination": "reencrypt"}}}
                kubectl("apply", "-f", "-", stdin=json.dumps(route))
                return

    thread = threading.Thread(target=operate, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)
    kubectl("-n", "openshift-image-registry", "delete", "route", "default-route", "--ignore-not-found")
    kubectl("patch", "configs.imageregistry.operator.openshift.io", "cluster", "--type=merge",
            "-p", '{"spec":{"defaultRoute":false}}')


def whoami(token: str) -> str:
    server = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    proc = subprocess.run([os.environ["KUBECTL"], "--kubeconfig=/dev/null", f"--server={server}",
                           f"--certificate-authority={os.environ['RIG_CA']}", f"--token={token}",
                           "auth", "whoami", "-o", "json"], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["status"]["userInfo"]["username"]


def login(namespace: str) -> dict:
    secret = json.loads(kubectl("-n", namespace, "get", "secret", "registry-creds", "-o", "json").stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]


def ocp_vars(namespace, **extra):
    return {"mlops_registry_vendor": "openshift", "mlops_namespace": namespace, "mlops_registry_host": "",
            "mlops_registry_username": "", "mlops_registry_password": "", "mlops_registry_ca_path": "",
            "mlops_openshift_token_lifetime": 3600, "mlops_openshift_token_renew_before": 600, **extra}


def test_openshift_registry_secret_scc_and_route(target, registry_operator, tmp_path):
    out = tmp_path / "facts.json"
    first = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, facts_out=str(out)))
    assert first.returncode == 0, first.failure() + first.stderr[-3000:]
    config = json.loads(kubectl("get", "configs.imageregistry.operator.openshift.io", "cluster", "-o", "json").stdout)
    assert config["spec"]["defaultRoute"] is True
    # the SA, its SCC and registry rights, as `oc adm policy` grants them
    kubectl("-n", target, "get", "serviceaccount", SA)
    bindings = {item["roleRef"]["name"]: item["subjects"] for item in
                json.loads(kubectl("-n", target, "get", "rolebindings", "-o", "json").stdout)["items"]}
    subject = [{"kind": "ServiceAccount", "name": SA, "namespace": target}]
    assert bindings == {"system:openshift:scc:anyuid": subject, "registry-editor": subject}
    # the login Kaniko uses: the SA's own token, for the internal registry and the route
    auths = login(target)
    assert sorted(auths) == sorted([INTERNAL, ROUTE_HOST])
    token = auths[INTERNAL]["password"]
    assert auths[INTERNAL]["username"] == "serviceaccount"
    assert base64.b64decode(auths[INTERNAL]["auth"]).decode() == f"serviceaccount:{token}"
    assert whoami(token) == f"system:serviceaccount:{target}:{SA}"
    assert token not in first.stdout + first.stderr
    facts = json.loads(out.read_text())
    assert facts["registry"]["host"] == ROUTE_HOST and facts["registry"]["password"] == token
    assert facts["registry"]["repositories"] == {
        "management_agent": f"{target}/mlops-management-agent", "tracking_agent": f"{target}/mlops-tracking-agent",
        "pps": f"{target}/datarobot-portable-prediction-api", "frozen_models": f"{target}/frozen-models"}
    builder = facts["image_builder"]
    assert builder["secretName"] == "registry-creds"
    assert builder["serviceAccount"] == {"create": False, "name": SA, "annotations": {}}
    assert builder["rbac"] == {"create": False}  # the page's second `create: false`: the role made the bindings
    # Kaniko verifies the registry by default, with OpenShift's service CA (filled in by its operator)
    assert builder["skipSslVerifyRegistries"] == []
    assert builder["extraVolumes"] == [{"name": "registry-ca", "configMap": {
        "name": "registry-ca", "items": [{"key": "service-ca.crt", "path": "ca.crt"}]}}]
    assert builder["extraVolumeMounts"] == [{"name": "registry-ca", "mountPath": f"/certs/{INTERNAL}",
                                             "readOnly": True}]
    assert builder["extraArgs"] == [f"--registry-certificate={INTERNAL}=/certs/{INTERNAL}/ca.crt"]
    ca_map = json.loads(kubectl("-n", target, "get", "configmap", "registry-ca", "-o", "json").stdout)
    assert ca_map["metadata"]["annotations"]["service.beta.openshift.io/inject-cabundle"] == "true"
    assert not any("WARNING" in str(task) for play in first.document["plays"] for task in play["tasks"]
                   if task["task"]["name"].startswith("Warn"))
    assert "skips" not in first.stdout and "does not verify" not in first.stdout
    # a re-run keeps the token
    again = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target))
    assert again.returncode == 0 and again.changed == 0, again.stdout[-3000:]
    assert login(target)[INTERNAL]["password"] == token
    # a token due within renew_before is replaced
    due = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, mlops_openshift_token_renew_before=3599))
    assert due.returncode == 0, due.failure()
    renewed = due.task("Registry login from the ServiceAccount's token")
    assert renewed["changed"] and renewed["reason"].startswith("the stored token expires at")
    assert login(target)[INTERNAL]["password"] != token


def test_node_ca_mounts_the_node_certificates_and_grants_hostmount(target, tmp_path):
    out = tmp_path / "facts.json"
    run = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, mlops_registry_host="registry.apps.example.test",
                                                     mlops_openshift_registry_tls="node_ca", facts_out=str(out)))
    assert run.returncode == 0, run.failure()
    builder = json.loads(out.read_text())["image_builder"]
    assert builder["extraVolumes"] == [{"name": "registry-ca", "hostPath": {"path": "/etc/docker/certs.d"}}]
    assert builder["extraVolumeMounts"] == [{"name": "registry-ca", "mountPath": "/certs/", "readOnly": True}]
    assert builder["extraArgs"] == [f"--registry-certificate={INTERNAL}=/certs/{INTERNAL}/ca.crt"]
    assert builder["skipSslVerifyRegistries"] == []
    roles = {item["roleRef"]["name"] for item in
             json.loads(kubectl("-n", target, "get", "rolebindings", "-o", "json").stdout)["items"]}
    assert "system:openshift:scc:hostmount-anyuid" in roles


def test_ca_file_mounts_the_given_ca(target, tmp_path):
    out = tmp_path / "facts.json"
    run = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, mlops_registry_host="registry.apps.example.test",
                                                     mlops_openshift_registry_tls="ca_file",
                                                     mlops_openshift_registry_ca_path=os.environ["RIG_CA"],
                                                     facts_out=str(out)))
    assert run.returncode == 0, run.failure()
    assert "does not verify the certificate" not in run.stdout + run.stderr  # verified: no warning
    facts = json.loads(out.read_text())
    builder = facts["image_builder"]
    assert facts["registry"]["ca_path"] == os.environ["RIG_CA"]  # our pushes trust the same CA as Kaniko
    assert builder["extraVolumes"] == [{"name": "registry-ca", "configMap": {"name": "registry-ca"}}]
    assert builder["extraVolumeMounts"] == [{"name": "registry-ca", "mountPath": f"/certs/{INTERNAL}",
                                             "readOnly": True}]
    ca = json.loads(kubectl("-n", target, "get", "configmap", "registry-ca", "-o", "json").stdout)["data"]["ca.crt"]
    assert ca.strip() == open(os.environ["RIG_CA"], encoding="utf-8").read().strip()
    missing = run_playbook(PLAYBOOK, extra_vars=ocp_vars(f"{target}-x", mlops_openshift_registry_tls="ca_file"))
    assert missing.returncode != 0 and "mlops_openshift_registry_ca_path" in missing.failure()
    assert kubectl("get", "namespace", f"{target}-x", check=False).returncode != 0


def test_skip_is_an_explicit_opt_in_with_a_warning(target, tmp_path):
    """The warning is Ansible's own ([WARNING] in the default callback's output), once, naming the registry."""
    out = tmp_path / "facts.json"
    run = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, mlops_registry_host="registry.apps.example.test",
                                                     mlops_openshift_registry_tls="skip", facts_out=str(out)),
                       env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    builder = json.loads(out.read_text())["image_builder"]
    assert builder["skipSslVerifyRegistries"] == [INTERNAL]
    assert builder["extraVolumes"] == [] and builder["extraArgs"] == []
    output = " ".join((run.stdout + run.stderr).split())  # warnings are wrapped to the terminal's width
    warnings = [part for part in output.split("[WARNING]: ")[1:] if "does not verify the certificate" in part]
    assert len(warnings) == 1, output[-3000:]
    assert f"does not verify the certificate of {INTERNAL}: anything that answers for that address receives the " \
           "token" in warnings[0]
    assert f"ServiceAccount {target}/{SA}" in warnings[0] and "mlops_openshift_registry_tls" in warnings[0]
    assert kubectl("-n", target, "get", "configmap", "registry-ca", check=False).returncode != 0


def test_check_mode_changes_nothing(target):
    checked = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, mlops_registry_host="registry.apps.example.test"),
                           check=True, diff=True)
    assert checked.returncode == 0, checked.failure()
    assert checked.changed > 0
    assert kubectl("get", "namespace", target, check=False).returncode != 0


def test_check_mode_in_a_project_made_beforehand_without_the_service_account(target):
    """`oc new-project` first, as users do: the check run reports the ServiceAccount and its registry login as
    changes instead of failing on the account a dry run could not make."""
    kubectl("create", "namespace", target)
    checked = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, mlops_registry_host="registry.apps.example.test"),
                           check=True, diff=True)
    assert checked.returncode == 0, checked.failure()
    assert checked.task("Registry login from the ServiceAccount's token").get("changed") is True
    assert kubectl("-n", target, "get", "serviceaccount", SA, check=False).returncode != 0
    assert kubectl("-n", target, "get", "secret", "registry-creds", check=False).returncode != 0


@pytest.mark.parametrize("route", [False, True], ids=["no-route-yet", "route-exposed"])
def test_a_first_check_run_of_the_images_reports_the_pushes_to_the_registry_it_would_set_up(
        target, demo_archives, route):  # noqa: F811
    """`--check` before the first run on an OpenShift cluster: without the default route, or with it but without the
    image builder's login (made from its ServiceAccount's token by the run), no registry can be asked; the image
    stages report their pushes as changes and touch nothing."""
    if route:  # as the registry operator leaves it once asked (registry_operator above)
        kubectl("patch", "configs.imageregistry.operator.openshift.io", "cluster", "--type=merge",
                "-p", '{"spec":{"defaultRoute":true}}')
        kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "route.openshift.io/v1", "kind": "Route",
             "metadata": {"name": "default-route", "namespace": "openshift-image-registry"},
             "spec": {"host": ROUTE_HOST, "to": {"kind": "Service", "name": "image-registry"},
                      "tls": {"termination": "reencrypt"}}}))
    try:
        checked = run_playbook("site.yml", tags="registry,openshift,images", check=True, diff=True,
                               extra_vars=ocp_vars(target))
    finally:
        kubectl("-n", "openshift-image-registry", "delete", "route", "default-route", "--ignore-not-found")
        kubectl("patch", "configs.imageregistry.operator.openshift.io", "cluster", "--type=merge",
                "-p", '{"spec":{"defaultRoute":false}}')
    assert checked.returncode == 0, checked.failure() or checked.stderr[-3000:]
    why = "gets its registry login in this run" if route else "gets its default route in this run"
    for task in ("Report the PPS push to the registry this run sets up",
                 "Report the agent images' pushes to the registry this run sets up"):
        reported = checked.task(task)
        assert reported.get("changed") is True and why in reported["msg"], reported
    assert kubectl("get", "namespace", target, check=False).returncode != 0


def test_legacy_token_secret_is_used_when_openshift_keeps_one(target):
    kubectl("create", "namespace", target)
    kubectl("-n", target, "create", "serviceaccount", SA)
    token = kubectl("-n", target, "create", "token", SA, "--duration=2h").stdout.strip()
    legacy = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": f"{SA}-token-abcde"},
         "data": {"token": base64.b64encode(token.encode()).decode()}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockercfg",
         "metadata": {"name": f"{SA}-dockercfg-abcde", "annotations": {"openshift.io/token-secret.name": f"{SA}-token-abcde"}},
         "data": {".dockercfg": base64.b64encode(b"{}").decode()}}]}
    kubectl("-n", target, "apply", "-f", "-", stdin=json.dumps(legacy))
    kubectl("-n", target, "patch", "serviceaccount", SA, "-p", json.dumps({"imagePullSecrets": [{"name": f"{SA}-dockercfg-abcde"}]}))
    result = run_module("datarobot_mlops.management_agent.service_account_registry_secret", {
        "namespace": target, "service_account": SA, "registries": [INTERNAL], "renew_before": 600})
    assert not result.failed, result.result.get("msg")
    assert result.result["token_source"] == "legacy_secret"
    assert login(target)[INTERNAL]["password"] == token
    # another ServiceAccount's token in the secret is replaced
    other = run_module("datarobot_mlops.management_agent.service_account_registry_secret", {
        "namespace": target, "service_account": "default", "registries": [INTERNAL], "token_source": "token_request",
        "renew_before": 600})
    assert other.result["changed"] and "is not system:serviceaccount" in other.result["reason"]
    assert whoami(login(target)[INTERNAL]["password"]) == f"system:serviceaccount:{target}:default"


def test_missing_service_account_is_a_clear_error(target):
    kubectl("create", "namespace", target)
    result = run_module("datarobot_mlops.management_agent.service_account_registry_secret", {
        "namespace": target, "service_account": "nobody", "registries": [INTERNAL]})
    assert result.failed and result.result["msg"].startswith(f"ServiceAccount {target}/nobody does not exist")
    assert "Traceback" not in result.stdout + result.stderr


def test_preflight_asks_for_the_token_calls_on_openshift(openshift_rig, namespace, tmp_path):
    """registry-creds comes from a TokenRequest (serviceaccounts/token): a user who may not make one is stopped by
    preflight, not by the openshift stage halfway through. A TokenReview (cluster-wide) is not asked for: the
    module does without it (test_a_recreated_service_account_gets_a_new_token_without_token_reviews)."""
    path = kubeconfig_of(namespace, "installer", tmp_path / "kubeconfig")[0]
    name = f"{namespace}-installer"
    token_calls = [{"verb": "create", "resource": "serviceaccounts", "subresource": "token", "namespace": namespace}]
    wanted = role_defaults(namespace, "openshift")
    assert all(call in wanted for call in token_calls)
    assert not [entry for entry in wanted if entry["resource"] == "tokenreviews"]
    try:
        grant(name, namespace, "installer", [entry for entry in wanted if entry not in token_calls] + SURVEY_GRANTS)
        run = run_playbook("playbooks/preflight.yml", extra_vars={"mlops_namespace": namespace},
                           env=ansible_env(KUBECONFIG=str(path)), check=True)
        assert run.returncode != 0
        lines = run.failure().split("\n- ")[1:]
        assert lines == [
            f"Not allowed to create serviceaccounts/token (core API group) in namespace {namespace}: bind the user "
            "to a role that grants it."], lines
        kubectl("delete", "clusterrole,clusterrolebinding", name)
        grant(name, namespace, "installer", wanted + SURVEY_GRANTS)
        enough = run_playbook("playbooks/preflight.yml", extra_vars={"mlops_namespace": namespace},
                              env=ansible_env(KUBECONFIG=str(path)), check=True)
        assert enough.returncode == 0, enough.failure()
        assert enough.task("Publish what later stages need")["ansible_facts"]["__preflight_published"][
            "platform"] == "openshift"
    finally:
        kubectl("delete", "clusterrole,clusterrolebinding", name, "--ignore-not-found", check=False)


def test_a_recreated_service_account_gets_a_new_token_without_token_reviews(target, tmp_path):
    """A user who may not create tokenreviews (cluster-wide): the stored token is judged by its claims, and the uid
    it names tells a ServiceAccount deleted and created again, whose old token the API server no longer accepts."""
    kubectl("create", "namespace", target)
    kubectl("-n", target, "create", "serviceaccount", SA)
    path = kubeconfig_of(target, "installer", tmp_path / "kubeconfig")[0]
    name = f"{target}-installer"
    grant(name, target, "installer", [{"verb": verb, "resource": resource, "namespace": target}
                                      for verb, resource in [("get", "serviceaccounts"), ("get", "secrets"),
                                                             ("create", "secrets"), ("update", "secrets"),
                                                             ("create", "serviceaccounts/token")]])
    args = {"namespace": target, "service_account": SA, "registries": [INTERNAL], "token_source": "token_request",
            "token_lifetime": 3600, "renew_before": 600}
    env = ansible_env(KUBECONFIG=str(path))
    try:
        assert "yes" != kubectl("auth", "can-i", "create", "tokenreviews.authentication.k8s.io",
                                f"--as=system:serviceaccount:{target}:installer", check=False).stdout.strip()
        first = run_module("datarobot_mlops.management_agent.service_account_registry_secret", args, env=env)
        assert first.result["changed"] and not first.failed, first.result.get("msg")
        token = login(target)[INTERNAL]["password"]
        again = run_module("datarobot_mlops.management_agent.service_account_registry_secret", args, env=env)
        assert not again.result["changed"] and again.result["reason"] == "the stored token is valid", again.result
        kubectl("-n", target, "delete", "serviceaccount", SA)
        kubectl("-n", target, "create", "serviceaccount", SA)
        checked = run_module("datarobot_mlops.management_agent.service_account_registry_secret", args, env=env,
                             check=True)
        assert checked.result["changed"] and "deleted and created again" in checked.result["reason"], checked.result
        assert login(target)[INTERNAL]["password"] == token  # check mode wrote nothing
        renewed = run_module("datarobot_mlops.management_agent.service_account_registry_secret", args, env=env)
        assert renewed.result["changed"] and "deleted and created again" in renewed.result["reason"], renewed.result
        fresh = login(target)[INTERNAL]["password"]
        assert fresh != token and whoami(fresh) == f"system:serviceaccount:{target}:{SA}"
        assert token not in renewed.stdout + renewed.stderr and fresh not in renewed.stdout + renewed.stderr
    finally:
        kubectl("delete", "clusterrole,clusterrolebinding", name, "--ignore-not-found", check=False)


def test_one_name_each_for_the_login_secret_and_the_service_account(target, tmp_path):
    """mlops_registry_secret_name and mlops_registry_service_account name the secret and the ServiceAccount in the
    chart's values (registry stage) and are what the openshift stage writes and makes: Kaniko logs in with the secret
    the chart names. The former openshift-only names are refused before anything is created."""
    out = tmp_path / "facts.json"
    run = run_playbook(PLAYBOOK, extra_vars=ocp_vars(target, mlops_registry_host="registry.apps.example.test",
                                                     mlops_registry_secret_name="builder-login",
                                                     mlops_registry_service_account="kaniko-builder",
                                                     facts_out=str(out)))
    assert run.returncode == 0, run.failure()
    builder = json.loads(out.read_text())["image_builder"]
    assert builder["secretName"] == "builder-login"
    assert builder["serviceAccount"] == {"create": False, "name": "kaniko-builder", "annotations": {}}
    secret = json.loads(kubectl("-n", target, "get", "secret", "builder-login", "-o", "json").stdout)
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert whoami(auths[INTERNAL]["password"]) == f"system:serviceaccount:{target}:kaniko-builder"
    assert kubectl("-n", target, "get", "secret", "registry-creds", check=False).returncode != 0
    subjects = [subject["name"] for item in json.loads(kubectl("-n", target, "get", "rolebindings", "-o",
                                                               "json").stdout)["items"] for subject in item["subjects"]]
    assert subjects and set(subjects) == {"kaniko-builder"}
    old = f"{target}-old"  # the stage alone: its checks come before the registry stage it runs first
    try:
        renamed = run_playbook("playbooks/openshift.yml", extra_vars=ocp_vars(
            old, mlops_registry_host="registry.apps.example.test", mlops_openshift_secret_name="builder-login"))
        assert renamed.returncode != 0
        assert "mlops_openshift_secret_name was renamed to mlops_registry_secret_name" in renamed.failure()
        assert kubectl("get", "namespace", old, check=False).returncode != 0
    finally:
        kubectl("delete", "namespace", old, "--wait=false", "--ignore-not-found", check=False)


def test_an_external_registry_keeps_its_login_when_the_vendor_is_not_set(target, rig, tmp_path):
    """On OpenShift with another registry and mlops_registry_vendor unset, both stages take the same default
    (generic): the registry stage's login for that registry stays in the secret, and the openshift stage neither
    binds registry-editor nor writes the ServiceAccount's token over it."""
    out = tmp_path / "facts.json"
    extra = {"mlops_namespace": target, "mlops_registry_host": rig["RIG_REGISTRY"],
             "mlops_registry_username": rig["RIG_REGISTRY_USER"], "mlops_registry_password": rig["RIG_REGISTRY_PASSWORD"],
             "mlops_registry_ca_path": rig["RIG_REGISTRY_CA"], "facts_out": str(out)}
    # The local inventory sets no vendor: the defaults decide.
    run = run_playbook(PLAYBOOK, extra_vars=extra)
    assert run.returncode == 0, run.failure()
    auths = login(target)
    assert list(auths) == [rig["RIG_REGISTRY"]] and auths[rig["RIG_REGISTRY"]]["username"] == rig["RIG_REGISTRY_USER"]
    roles = {item["roleRef"]["name"] for item in
             json.loads(kubectl("-n", target, "get", "rolebindings", "-o", "json").stdout)["items"]}
    assert "registry-editor" not in roles and "system:openshift:scc:anyuid" in roles
    facts = json.loads(out.read_text())
    assert facts["registry"]["host"] == rig["RIG_REGISTRY"] and facts["image_builder"]["secretName"] == "registry-creds"
