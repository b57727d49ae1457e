"""agent_deployment on the rig, with the agent tarball's chart (tests/fixtures/agent_tarball).

Failing rollouts use the rig's kwok stage tests/rig/kwok-stages/image-pull-backoff.yaml: a container
whose image tag is `does-not-exist` waits in ImagePullBackOff and its pod never becomes ready.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from typing import Any

import pytest

from ansible_cli import run_module
from conftest import HELMS, kubectl
from fixtures.agent_tarball import chart_dir

MODULE = "datarobot_mlops.management_agent.agent_deployment"
CHART = str(chart_dir())
AGENT_IMAGE = "registry.invalid/datarobot/mlops-management-agent"
BROKEN_TAG = "does-not-exist"  # the rig's kwok stage keeps such pods in ImagePullBackOff


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([os.environ["HELM"], *args], capture_output=True, text=True, check=False, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def history(release: str, namespace: str) -> list[dict[str, Any]]:
    proc = helm("history", release, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else []


def live(namespace: str) -> dict[str, Any]:
    """What check mode must not change: each Deployment's and ConfigMap's spec/data and generation."""
    found = json.loads(kubectl("-n", namespace, "get", "deployments,configmaps", "-o", "json").stdout)["items"]
    return {f"{item['kind']}/{item['metadata']['name']}":
            (item.get("spec"), item.get("data"), item["metadata"].get("generation"))
            for item in found if item["metadata"]["name"] != "kube-root-ca.crt"}


def snapshot(release: str, namespace: str) -> tuple[Any, Any]:
    return history(release, namespace), live(namespace)


def deployment(namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("-n", namespace, "get", "deployment", name, "-o", "json").stdout)


def agent_values(tag: str = "9.2.0", tracking: bool = False, **extra: Any) -> dict[str, Any]:
    values = {"managementAgent": {"repository": AGENT_IMAGE, "tag": tag},
              "trackingAgent": {"enabled": tracking, "image": "registry.invalid/datarobot/mlops-tracking-agent:9.2.0"},
              "datarobot": {"dataRobotUrl": "https://app.datarobot.example", "apiSecretName": "mlops-api-key",
                            "predictionEnvId": "65f1c2a9e4b0a1b2c3d4e5f6"}}
    for key, value in extra.items():
        values.setdefault(key, {}).update(value)
    return values


# The tests of helm's behaviour run under helm 3 and helm 4 (the release fixture's helm_under_test); the one about
# argument errors, which helm barely sees, under helm 3 only.
BOTH_HELMS = pytest.mark.parametrize("helm_under_test", HELMS, indirect=True)


@pytest.fixture
def release(namespace, helm_under_test):
    """A unique release in the test's own namespace, uninstalled afterwards; returns (name, args for the module).
    The module is given helm_under_test as binary_path."""
    name = f"bosun-{uuid.uuid4().hex[:6]}"

    def args(**overrides: Any) -> dict[str, Any]:
        return {"chart_ref": CHART, "release_name": name, "release_namespace": namespace, "values": agent_values(),
                "wait_timeout": 90, "binary_path": helm_under_test, **overrides}

    yield name, args
    helm("uninstall", name, "-n", namespace, "--wait", "--timeout", "60s", check=False)


def agent(name: str) -> str:
    return f"{name}-datarobot-management-agent"


@BOTH_HELMS
def test_install_waits_for_both_agents_and_a_second_run_changes_nothing(release, namespace):
    name, args = release
    first = run_module(MODULE, args(values=agent_values(tracking=True)))
    assert first.result.get("changed") is True, first.result.get("msg") or first.stderr
    assert first.result["operation"] == "install"
    assert first.result["status"]["status"] == "deployed" and first.result["status"]["revision"] == 1
    assert first.result["status"]["chart"] == "datarobot-management-agent-1.2.0"
    for deployment_name in (agent(name), f"{name}-datarobot-tracking-agent"):
        conditions = {c["type"]: c["status"] for c in deployment(namespace, deployment_name)["status"]["conditions"]}
        assert conditions["Available"] == "True", deployment_name

    again = run_module(MODULE, args(values=agent_values(tracking=True)), diff=True)
    assert again.result["changed"] is False, again.result
    assert again.result["operation"] == "none" and again.result["drift"] == [] and again.result["diff"] == []
    assert len(history(name, namespace)) == 1


@BOTH_HELMS
def test_a_changed_value_makes_exactly_one_revision_and_check_mode_only_reports_it(release, namespace):
    name, args = release
    assert run_module(MODULE, args()).result["changed"] is True
    scaled = args(values=agent_values(managementAgent={"replicas": 2}))

    before = snapshot(name, namespace)
    checked = run_module(MODULE, scaled, check=True, diff=True)
    assert checked.result["changed"] is True and checked.result["operation"] == "upgrade"
    assert checked.result["reasons"] == ["values differ", "rendered manifest differs"]
    values_diff, manifest_diff = checked.result["diff"][:2]
    assert "replicas: 2" in values_diff["after"] and "replicas: 2" not in values_diff["before"]
    assert "replicas: 2" in manifest_diff["after"]
    assert snapshot(name, namespace) == before

    upgraded = run_module(MODULE, scaled)
    assert upgraded.result["changed"] is True and upgraded.result["status"]["revision"] == 2
    assert [entry["revision"] for entry in history(name, namespace)] == [1, 2]
    assert deployment(namespace, agent(name))["status"]["availableReplicas"] == 2
    assert run_module(MODULE, scaled).result["changed"] is False
    assert len(history(name, namespace)) == 2


@BOTH_HELMS
def test_hand_edits_are_reported_and_repaired(release, namespace):
    name, args = release
    assert run_module(MODULE, args()).result["changed"] is True
    kubectl("-n", namespace, "set", "image", f"deployment/{agent(name)}", f"management-agent={AGENT_IMAGE}:hacked")
    kubectl("-n", namespace, "scale", f"deployment/{agent(name)}", "--replicas=3")
    kubectl("-n", namespace, "patch", "configmap", agent(name), "--type=merge",
            "-p", json.dumps({"data": {"config.yaml": "edited: by hand\n"}}))

    before = snapshot(name, namespace)
    checked = run_module(MODULE, args(), check=True, diff=True)
    assert checked.result["changed"] is True and checked.result["operation"] == "repair"
    assert snapshot(name, namespace) == before

    repaired = run_module(MODULE, args(), diff=True)
    assert repaired.result["changed"] is True, repaired.result.get("msg")
    drift = {(d["object"], d["field"]): (d["live"], d["desired"]) for d in repaired.result["drift"]}
    assert drift == {
        (f"Deployment/{agent(name)}", "spec.replicas"): (3, 1),
        (f"Deployment/{agent(name)}", "spec.template.spec.containers[management-agent].image"):
            (f"{AGENT_IMAGE}:hacked", f"{AGENT_IMAGE}:9.2.0"),
        (f"ConfigMap/{agent(name)}", "data[config.yaml]"): ("edited: by hand\n", drift[(
            f"ConfigMap/{agent(name)}", "data[config.yaml]")][1]),
    }
    assert "predictionEnvId" in drift[(f"ConfigMap/{agent(name)}", "data[config.yaml]")][1]
    drift_diff = repaired.result["diff"][-1]
    assert ":hacked" in drift_diff["before"] and ":9.2.0" in drift_diff["after"]

    repaired_deployment = deployment(namespace, agent(name))
    assert repaired_deployment["spec"]["replicas"] == 1
    assert repaired_deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"{AGENT_IMAGE}:9.2.0"
    config = json.loads(kubectl("-n", namespace, "get", "configmap", agent(name), "-o", "json").stdout)
    assert "predictionEnvId" in config["data"]["config.yaml"]
    assert len(history(name, namespace)) == 1  # put back in place: the release itself did not change
    assert run_module(MODULE, args()).result["changed"] is False

    # The repaired fields changed by the chart next: helm 4's server-side apply must not stop at the fields that
    # the hand edits and the repair's patch wrote (helm 3's three-way merge never did).
    upgraded = run_module(MODULE, args(values=agent_values(tag="9.2.1", managementAgent={"replicas": 2})))
    assert upgraded.result.get("changed") is True and not upgraded.failed, upgraded.result.get("msg")
    spec = deployment(namespace, agent(name))["spec"]
    assert (spec["replicas"], spec["template"]["spec"]["containers"][0]["image"]) == (2, f"{AGENT_IMAGE}:9.2.1")
    assert len(history(name, namespace)) == 2


@BOTH_HELMS
def test_a_deleted_object_is_recreated(release, namespace):
    name, args = release
    assert run_module(MODULE, args()).result["changed"] is True
    kubectl("-n", namespace, "delete", "configmap", agent(name))
    again = run_module(MODULE, args())
    assert again.result["changed"] is True and again.result["reasons"] == ["objects of the release were deleted"]
    assert again.result["drift"] == [{"object": f"ConfigMap/{agent(name)}", "field": "(object)", "live": "(absent)",
                                      "desired": "present"}]
    kubectl("-n", namespace, "get", "configmap", agent(name))
    assert run_module(MODULE, args()).result["changed"] is False


@BOTH_HELMS
def test_a_bad_image_is_rolled_back_with_the_reason(release, namespace):
    name, args = release
    assert run_module(MODULE, args()).result["changed"] is True
    broken = run_module(MODULE, args(values=agent_values(tag=BROKEN_TAG), wait_timeout=15))
    assert broken.failed and broken.result["changed"] is True
    message = broken.result["msg"]
    assert "Rolled back to revision 1" in message, message
    pods = broken.result["diagnostics"]["pods"]
    assert pods and pods[0]["pod"].startswith(agent(name)) and pods[0]["pod"] in message
    assert pods[0]["containers"][0]["reason"] == "ImagePullBackOff" and "ImagePullBackOff" in message
    assert any(event["reason"] == "Failed" for event in broken.result["diagnostics"]["events"])
    assert "Traceback" not in broken.stdout + broken.stderr

    revisions = history(name, namespace)
    assert [(r["revision"], r["status"]) for r in revisions] == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert revisions[-1]["description"] == "Rollback to 1"
    assert broken.result["status"]["revision"] == 3
    image = deployment(namespace, agent(name))["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{AGENT_IMAGE}:9.2.0"
    kubectl("-n", namespace, "rollout", "status", f"deployment/{agent(name)}", "--timeout=60s")
    assert run_module(MODULE, args()).result["changed"] is False


@BOTH_HELMS
def test_a_failed_first_install_leaves_no_release(release, namespace):
    name, args = release
    broken = run_module(MODULE, args(values=agent_values(tag=BROKEN_TAG), wait_timeout=15))
    assert broken.failed and "uninstalled" in broken.result["msg"] and "ImagePullBackOff" in broken.result["msg"]
    assert history(name, namespace) == []
    assert kubectl("-n", namespace, "get", "deployments", "-o", "name").stdout.strip() == ""


@BOTH_HELMS
def test_check_mode_install_and_state_absent(release, namespace):
    name, args = release
    checked = run_module(MODULE, args(), check=True, diff=True)
    assert checked.result["changed"] is True and checked.result["operation"] == "install"
    assert f"name: {agent(name)}" in checked.result["diff"][1]["after"]
    assert history(name, namespace) == [] and live(namespace) == {}

    assert run_module(MODULE, args()).result["changed"] is True
    before = snapshot(name, namespace)
    absent_checked = run_module(MODULE, {**args(), "state": "absent"}, check=True)
    assert absent_checked.result["changed"] is True and snapshot(name, namespace) == before

    removed = run_module(MODULE, {"release_name": name, "release_namespace": namespace, "state": "absent"})
    assert removed.result["changed"] is True and removed.result["operation"] == "uninstall"
    assert history(name, namespace) == []
    again = run_module(MODULE, {"release_name": name, "release_namespace": namespace, "state": "absent"}, check=True)
    assert again.result["changed"] is False


@BOTH_HELMS
def test_a_token_value_never_reaches_the_output(release, namespace):
    name, args = release
    token = f"tok-{uuid.uuid4().hex}"
    hidden = f"hidden-{uuid.uuid4().hex[:12]}"
    values = agent_values(datarobot={"apiToken": token}, imageBuilder={"extraArgs": [f"--password-file={hidden}"]})
    module_args = args(values=values, secret_value_paths=["imageBuilder.extraArgs"])
    for check in (True, False):
        outcome = run_module(MODULE, module_args, check=check, diff=True, verbosity=3)
        assert outcome.result.get("changed") is True, outcome.result.get("msg")
        output = outcome.stdout + outcome.stderr
        assert token not in output and hidden not in output
        assert outcome.result["values"]["datarobot"]["apiToken"] == "********"
    # the rendered agent config carries extraArgs: shown masked in the next diff too
    changed = run_module(MODULE, args(values={**values, "managementAgent": {"repository": AGENT_IMAGE, "tag": "9.2.1"}},
                                      secret_value_paths=["imageBuilder.extraArgs"]),
                         check=True, diff=True, verbosity=3)
    assert changed.result["changed"] is True
    assert hidden not in changed.stdout + changed.stderr and token not in changed.stdout + changed.stderr


@BOTH_HELMS
def test_a_release_held_by_another_operation_is_left_alone(release, namespace, tmp_path):
    name, args = release
    assert run_module(MODULE, args()).result["changed"] is True
    values = tmp_path / "broken.json"
    values.write_text(json.dumps(agent_values(tag=BROKEN_TAG)))
    # Another client upgrades with --wait: the release stays pending-upgrade until that wait ends.
    other = subprocess.Popen([os.environ["HELM"], "upgrade", name, CHART, "-n", namespace, "--wait", "--timeout",
                              "25s", "--values", str(values)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and history(name, namespace)[-1]["status"] != "pending-upgrade":
            time.sleep(0.3)
        busy = run_module(MODULE, args())
        assert busy.failed and busy.result["changed"] is False
        assert (f"Another operation is in progress on release {name} in namespace {namespace} (status "
                "pending-upgrade") in busy.result["msg"]
        assert f"helm rollback {name} 1 -n {namespace}" in busy.result["msg"]
    finally:
        other.wait(timeout=120)
    assert history(name, namespace)[-1]["status"] == "failed"
    recovered = run_module(MODULE, args())
    assert recovered.result["changed"] is True and recovered.result["status"]["status"] == "deployed"


def test_errors_say_what_to_fix(release, namespace, tmp_path):
    name, args = release
    missing = run_module(MODULE, args(chart_ref=str(tmp_path / "no-such-chart")))
    assert missing.failed and "Chart path" in missing.result["msg"] and "does not exist" in missing.result["msg"]
    no_helm = run_module(MODULE, args(binary_path=str(tmp_path / "helm")))
    assert no_helm.failed and "helm was not found" in no_helm.result["msg"]
    bad_values = run_module(MODULE, args(values_files=[str(tmp_path / "missing.yaml")]))
    assert bad_values.failed and "missing.yaml does not exist" in bad_values.result["msg"]
    unreachable = run_module(MODULE, args(host="https://127.0.0.1:9", api_key="x", validate_certs=False))
    assert unreachable.failed and "Cannot reach the API server at https://127.0.0.1:9" in unreachable.result["msg"]
    for outcome in (missing, no_helm, bad_values, unreachable):
        assert "Traceback" not in outcome.stdout + outcome.stderr
    assert history(name, namespace) == []


@BOTH_HELMS
def test_timeouts_take_duration_strings_as_helm_does(release, namespace):
    """wait_timeout/stuck_timeout accept "15s"/"0s" like kubernetes.core's helm; a bad one is refused before helm."""
    name, args = release
    unreadable = run_module(MODULE, args(wait_timeout="ten minutes"))
    assert unreadable.failed and unreadable.result["changed"] is False
    assert "wait_timeout: 'ten minutes' is not a timeout" in unreadable.result["msg"], unreadable.result
    assert "90s, 10m or 1h30m" in unreadable.result["msg"]
    negative = run_module(MODULE, args(stuck_timeout="-1m"))
    assert negative.failed and "stuck_timeout: '-1m' is not a timeout (a timeout cannot be negative)" \
        in negative.result["msg"]
    assert history(name, namespace) == []

    broken = run_module(MODULE, args(values=agent_values(tag=BROKEN_TAG), wait_timeout="0m15s", stuck_timeout="0s"))
    assert broken.failed and "ImagePullBackOff" in broken.result["msg"], broken.result
    assert "context deadline exceeded" in broken.result["msg"], broken.result["msg"]  # helm's own --timeout 15s
    # stuck_timeout 0s: no early stop, helm's own wait ended it (0m15s -> --timeout 15s: unit tests test__duration,
    # test__helm_cli)
    assert "was stopped before its timeout" not in broken.result["msg"], broken.result["msg"]
    for outcome in (unreadable, negative, broken):
        assert "Traceback" not in outcome.stdout + outcome.stderr
    installed = run_module(MODULE, args(wait_timeout="1m30s"))
    assert installed.result["changed"] is True and installed.result["status"]["status"] == "deployed", installed.result
