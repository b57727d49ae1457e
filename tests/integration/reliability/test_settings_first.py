"""Bad settings of any stage are refused before anything is touched: by the stage playbook run alone, and by site.yml
before its first stage.

Each case runs what a user runs (a stage playbook, or site.yml) with one setting wrong, against an inventory whose
cluster cannot be reached (its kubeconfig names a closed loopback port) and whose registry, downloads and DataRobot
do not resolve (`.invalid`), and must: fail; say what is wrong and how to fix it (the expected fragments); show no
Python traceback; and run no task but the settings checks. The json callback lists every task that ran: only argument
validation, includes, asserts and fails may be among them. A task that asked the cluster, a registry or DataRobot, or
downloaded or pushed anything would be listed there (and would have failed on the unreachable cluster, with a
connection error instead of the expected message). No rig is needed.

Each case records one `bad_input` line in the reliability ledger before its asserts, as test_bad_input.py does.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from ansible_cli import REPO, PlaybookRun, ansible_env, run_playbook

sys.path.insert(0, str(REPO / "tests" / "rig"))
from processes import free_port  # noqa: E402  the rig's helpers: a free port outside the ephemeral range

# What a settings check runs (and the survey answers' set_fact); anything else touched (or would have touched) the
# cluster, a registry or DataRobot.
CHECKS_ONLY = {"ansible.builtin.include_role", "ansible.builtin.include_tasks", "ansible.builtin.validate_argument_spec",
               "ansible.builtin.assert", "ansible.builtin.fail", "ansible.builtin.set_fact"}
# The caller's own access to a cluster, a registry or DataRobot must not reach the runs.
OWN_ACCESS = ("KUBECONFIG", "K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT", "REGISTRY_HOST", "REGISTRY_USERNAME",
              "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE", "DATAROBOT_ENDPOINT", "DATAROBOT_API_TOKEN",
              "DATAROBOT_API_TOKEN_FILE", "DOCKER_HOST")
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZmFrZQ==\n-----END CERTIFICATE-----\n"


@dataclass
class Unreachable:
    """An inventory of one cluster nobody answers for, with good settings for every stage."""

    path: Path
    kubeconfig: Path
    tmp: Path

    def env(self) -> dict[str, str]:
        return ansible_env(without=OWN_ACCESS, KUBECONFIG=str(self.kubeconfig), HOME=str(self.tmp / "home"))

    def run(self, playbook: str, extra: dict[str, Any], tags: str | None = None,
            skip_tags: str | None = None) -> PlaybookRun:
        return run_playbook(playbook, inventory=str(self.path), extra_vars=extra, tags=tags, skip_tags=skip_tags,
                            env=self.env())


@pytest.fixture(scope="module", name="cluster")
def fixture_cluster(tmp_path_factory) -> Unreachable:
    tmp = tmp_path_factory.mktemp("settings-first")
    (tmp / "home").mkdir()
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "closed",
        "clusters": [{"name": "closed", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "closed", "context": {"cluster": "closed", "user": "nobody"}}]}))
    (tmp / "registry-ca.pem").write_text(PEM)
    inventory = tmp / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(json.dumps({"clusters": {"hosts": {"unreachable": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "mlops_cluster_env": {"K8S_AUTH_KUBECONFIG": str(kubeconfig)}}}}}))
    # Good values, some at the edge of what is accepted (a prefix of two components, durations, a CA file).
    (inventory / "group_vars" / "clusters.yml").write_text(json.dumps({
        "mlops_namespace": "t-settings-first",
        "mlops_registry_host": "registry.invalid:5000", "mlops_registry_username": "push",
        "mlops_registry_password": "not-a-password", "mlops_registry_ca_path": str(tmp / "registry-ca.pem"),
        "mlops_registry_path_prefix": "my-project/mlops/",
        "mlops_pps_image_archive": str(tmp / "datarobot-portable-prediction-api-9.2.0.tar.gz"),
        "mlops_pps_image_version": "9.2.0",
        "mlops_agent_tarball": str(tmp / "datarobot-mlops-agent-9.2.0.tar.gz"),
        "mlops_outfacing_url_root": "https://mlops.example.invalid/deployments/",
        "mlops_datarobot_endpoint": "https://datarobot.invalid", "mlops_datarobot_api_token": "not-a-token",
        "mlops_management_agent_wait_timeout": "10m", "mlops_management_agent_stuck_timeout": 90,
        "mlops_ingress_nginx_wait_timeout": "5m", "mlops_download_cache_dir": str(tmp / "downloads"),
        "mlops_agent_tarball_cache_dir": str(tmp / "agent-cache")}))
    return Unreachable(inventory, kubeconfig, tmp)


def ran(run: PlaybookRun) -> list[tuple[str, str, dict[str, Any]]]:
    """(task name, action, result) of every task that ran (not skipped) on any host, in order."""
    return [(task["task"]["name"], result.get("action", ""), result)
            for play in run.document.get("plays", []) for task in play["tasks"]
            for result in task["hosts"].values() if not result.get("skipped")]


def touched(run: PlaybookRun) -> list[str]:
    return [f"{name} ({action})" for name, action, _result in ran(run) if action not in CHECKS_ONLY]


# --- the corpus -------------------------------------------------------------------------------------------------

Extra = Callable[[Unreachable], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    id: str
    playbook: str
    extra: Extra
    expect: tuple[str, ...]  # fragments of the message: what is wrong, and what to do
    skip_tags: str | None = None


def given(**variables: Any) -> Extra:
    return lambda _cluster: variables


BY_URL = {"mlops_pps_image_archive": "", "mlops_pps_image_url": "https://downloads.invalid/pps-9.2.0.tar.gz",
          "mlops_pps_image_checksum": "sha256:" + "0" * 64,
          # the registry stage's facts, as site.yml would hand them on: the stage goes straight to the registry
          "_mlops": {"registry": {"host": "registry.invalid:5000", "username": "push", "password": "not-a-password",
                                  "repositories": {"pps": "datarobot/datarobot-portable-prediction-api"}}}}
LATEST = ("Refusing tag 'latest' (mlops_pps_image_version)", "Use the PPS version")
TIMEOUT_FORMS = "give whole seconds (600) or a duration such as 90s, 10m or 1h30m"
PREFIX = ("is not a repository path prefix", "each followed by '/', e.g. my-org/ or my-project/mlops/")
RENAMED_SECRET = ("mlops_openshift_secret_name was renamed to mlops_registry_secret_name",
                  "Rename mlops_openshift_secret_name in the inventory")
CHART_FORM = ("is not a chart version of the form N.N.N", "e.g. 4.15.1")

CASES = [
    # pps_image: the tag before the registry is asked and before the archive is downloaded
    Case("pps-version-latest", "playbooks/pps_image.yml", given(mlops_pps_image_version="latest"), LATEST),
    Case("pps-version-latest-by-url", "playbooks/pps_image.yml", given(mlops_pps_image_version="latest", **BY_URL),
         LATEST),
    Case("pps-version-empty", "playbooks/pps_image.yml", given(mlops_pps_image_version=""),
         ("mlops_pps_image_version is empty", "set it to the PPS version of the archive (e.g. 9.2.0)")),
    Case("pps-version-with-a-space-by-url", "playbooks/pps_image.yml",
         given(mlops_pps_image_version="9.2.0 beta", **BY_URL),
         ('Invalid mlops_pps_image_version "9.2.0 beta"', "tags are 1-128 characters of letters, digits")),
    # agent_images
    Case("agent-images-version-latest", "playbooks/agent_images.yml", given(mlops_agent_images_version="latest"),
         ("Refusing mlops_agent_images_version 'latest'", "Use the agent version")),
    # management_agent: its argument spec, its timeouts and its version, before the registry stage creates anything
    Case("management-agent-state-typo", "playbooks/management_agent.yml", given(mlops_management_agent_state="Absent"),
         ("value of mlops_management_agent_state must be one of: present, absent, got: Absent",)),
    Case("management-agent-wait-timeout-not-a-duration", "playbooks/management_agent.yml",
         given(mlops_management_agent_wait_timeout="abc", mlops_prediction_environment_id="65f1c2a9e4b0a1b2c3d4e5f6"),
         ("mlops_management_agent_wait_timeout: 'abc' is not a timeout", TIMEOUT_FORMS)),
    Case("management-agent-stuck-timeout-negative", "playbooks/management_agent.yml",
         given(mlops_management_agent_stuck_timeout="-1m", mlops_prediction_environment_id="65f1c2a9e4b0a1b2c3d4e5f6"),
         ("mlops_management_agent_stuck_timeout: '-1m' is not a timeout (a timeout cannot be negative)",)),
    Case("management-agent-version-with-a-space", "playbooks/management_agent.yml",
         given(mlops_management_agent_version="9.2.0 beta", mlops_prediction_environment_id="65f1c2a9e4b0a1b2c3d4e5f6"),
         ("Missing or wrong here: mlops_management_agent_version", "an image tag other than latest")),
    # openshift: one name per setting, checked before the cluster is asked whether it is OpenShift
    Case("openshift-old-secret-name", "playbooks/openshift.yml", given(mlops_openshift_secret_name="my-creds"),
         RENAMED_SECRET),
    Case("openshift-old-service-account", "playbooks/openshift.yml",
         given(mlops_openshift_service_account="builder"),
         ("mlops_openshift_service_account was renamed to mlops_registry_service_account",)),
    Case("openshift-token-source-typo", "playbooks/openshift.yml", given(mlops_openshift_token_source="tokenrequest"),
         ("value of mlops_openshift_token_source must be one of: auto, token_request, got: tokenrequest",)),
    # registry: the prefix, the CA files and the route timeout, before the namespace is created
    Case("registry-path-prefix-without-its-slash", "playbooks/registry.yml",
         given(mlops_registry_path_prefix="my-project/mlops"),
         ('mlops_registry_path_prefix "my-project/mlops"', *PREFIX)),
    Case("registry-path-prefix-upper-case-and-space", "playbooks/registry.yml",
         given(mlops_registry_path_prefix="/My Org/"), ('mlops_registry_path_prefix "/My Org/"', *PREFIX)),
    Case("registry-ca-path-missing", "playbooks/registry.yml",
         given(mlops_registry_ca_path="/nonexistent/registry-ca.pem"),
         ('mlops_registry_ca_path "/nonexistent/registry-ca.pem" cannot be read on the controller',
          "give the path of the registry's PEM CA file on the controller")),
    Case("registry-ca-path-not-a-certificate", "playbooks/registry.yml",
         lambda cluster: {"mlops_registry_ca_path": str(cluster.kubeconfig)},
         ("holds no PEM certificate (-----BEGIN CERTIFICATE-----)",)),
    Case("openshift-registry-ca-path-missing", "playbooks/registry.yml",
         given(mlops_registry_vendor="openshift", mlops_registry_host="", mlops_openshift_registry_tls="ca_file",
               mlops_openshift_registry_ca_path="/nonexistent/service-ca.pem"),
         ('mlops_openshift_registry_ca_path "/nonexistent/service-ca.pem" cannot be read on the controller',)),
    Case("openshift-route-timeout-not-a-duration", "playbooks/registry.yml",
         given(mlops_registry_vendor="openshift", mlops_registry_host="",
               mlops_openshift_registry_route_timeout="two minutes"),
         ("mlops_openshift_registry_route_timeout: 'two minutes' is not a timeout", TIMEOUT_FORMS)),
    # ingress_nginx: the version's form before it is compared
    Case("ingress-chart-version-with-a-v", "playbooks/ingress.yml", given(mlops_ingress_nginx_chart_version="v4.15.1"),
         ('mlops_ingress_nginx_chart_version "v4.15.1"', *CHART_FORM)),
    Case("ingress-chart-version-latest", "playbooks/ingress.yml", given(mlops_ingress_nginx_chart_version="latest"),
         ('mlops_ingress_nginx_chart_version "latest"', *CHART_FORM)),
    # site.yml: a later stage's bad setting stops the run before the first stage (preflight) asks the cluster
    Case("site-pps-version-latest", "site.yml", given(mlops_pps_image_version="latest"), LATEST),
    Case("site-agent-images-version-latest", "site.yml", given(mlops_agent_images_version="latest"),
         ("Refusing mlops_agent_images_version 'latest'",)),
    Case("site-management-agent-state-typo", "site.yml", given(mlops_management_agent_state="Absent"),
         ("value of mlops_management_agent_state must be one of: present, absent, got: Absent",)),
    Case("site-management-agent-wait-timeout-not-a-duration", "site.yml",
         given(mlops_management_agent_wait_timeout="abc"),
         ("mlops_management_agent_wait_timeout: 'abc' is not a timeout", TIMEOUT_FORMS)),
    Case("site-openshift-old-secret-name", "site.yml", given(mlops_openshift_secret_name="my-creds"), RENAMED_SECRET),
    Case("site-registry-path-prefix-without-its-slash", "site.yml", given(mlops_registry_path_prefix="acme"),
         ('mlops_registry_path_prefix "acme"', *PREFIX)),
    Case("site-ingress-chart-version-with-a-v", "site.yml", given(mlops_ingress_nginx_chart_version="v4.15.1"),
         CHART_FORM),
    # Without the prediction_environment stage (--skip-tags), its id must be given.
    Case("site-prediction-environment-stage-skipped-without-an-id", "site.yml", given(),
         ("Missing or wrong here: mlops_prediction_environment_id",), skip_tags="prediction_environment"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_setting_is_refused_before_anything_is_touched(cluster, ledger, case):
    started = time.monotonic()
    run = cluster.run(case.playbook, case.extra(cluster), skip_tags=case.skip_tags)
    elapsed = time.monotonic() - started
    message = run.failure()

    missing = [fragment for fragment in case.expect if fragment not in message]
    traceback_shown = "Traceback" in run.stdout + run.stderr
    beyond = touched(run)
    problems = [problem for problem, bad in [
        ("did not fail", run.returncode == 0), (f"message lacks {missing}", bool(missing)),
        ("showed a traceback", traceback_shown), (f"ran {beyond}", bool(beyond))] if bad]
    # the time is told, not judged: a timing decides nothing on a slower machine (make bench is where times count)
    ledger.record("bad_input", f"settings first: {case.id}", held=not problems,
                  detail=("; ".join(problems) + ": " if problems else "") + f"({elapsed:.0f}s) " + message)

    assert run.returncode != 0, f"{case.id} did not fail: {run.stdout[-2000:]}"
    assert not missing, f"{case.id}: message {message!r} lacks {missing}"
    assert not traceback_shown, (run.stdout + run.stderr)[-4000:]
    assert not beyond, f"{case.id}: tasks beyond the settings checks ran: {beyond}"


def test_good_settings_pass_every_stage_check_and_the_run_goes_on(cluster):
    """The control: the same inventory, nothing wrong, passes site.yml's first play; the run then reaches the
    preflight, which asks the (unreachable) cluster. So the checks refuse only what is wrong, and a task that asks
    the cluster does show in the task list. The inventory gives no prediction environment id: up front, the one the
    prediction_environment stage will publish counts (the management_agent stage checks it again when it starts)."""
    run = cluster.run("site.yml", {})
    assert run.returncode != 0
    first = run.document["plays"][0]
    assert first["play"]["name"] == "Every stage's settings, before any stage changes anything"
    checked = [task["task"]["name"] for task in first["tasks"]]
    for stage in ("Ingress", "Registry", "OpenShift", "PPS image", "Agent images", "Prediction environment",
                  "Management agent"):
        assert f"{stage} settings" in checked, checked
    assert not [name for name, _action, result in ran(run) if result.get("failed")
                and name in checked], run.failure()
    assert touched(run) and "Check the cluster's version, nodes and permissions" in touched(run)[0], touched(run)
    assert "Connection refused" in run.failure() or "Failed to establish" in run.failure(), run.failure()


def test_tags_select_the_checks_with_their_stages(cluster):
    """--skip-tags leaves a stage's checks out with the stage; --tags runs only the selected stages' checks."""
    skipped = cluster.run("site.yml", {"mlops_agent_images_version": "latest"}, skip_tags="agent_images")
    names = [name for name, _action, _result in ran(skipped)]
    assert "Agent images settings" not in names and "PPS image settings" in names
    assert "Refusing mlops_agent_images_version 'latest'" not in skipped.failure()
    assert "Check the cluster's version" in touched(skipped)[0], touched(skipped)  # the run went on
    selected = cluster.run("site.yml", {"mlops_management_agent_state": "Absent"}, tags="registry")
    names = [name for name, _action, _result in ran(selected)]
    assert "Registry settings" in names and "Management agent settings" not in names
    assert "mlops_management_agent_state" not in selected.failure()


def test_a_preflight_run_checks_every_stages_settings_and_then_the_cluster(cluster):
    """--tags preflight asks whether a whole run could go ahead: a bad setting of any stage is refused before the
    cluster is asked; good settings (no prediction environment id: the whole run would make one) reach the
    preflight's cluster checks; --skip-tags still leaves a stage out."""
    bad = cluster.run("site.yml", {"mlops_agent_images_version": "latest"}, tags="preflight")
    assert bad.returncode != 0
    assert "Refusing mlops_agent_images_version 'latest'" in bad.failure(), bad.failure()
    assert not touched(bad), touched(bad)

    good = cluster.run("site.yml", {}, tags="preflight")
    assert good.returncode != 0  # the cluster does not answer
    checked = {name.split(" : ")[0].rsplit(".", 1)[-1] for name, _action, _result in ran(good)
               if "arg spec 'checks' - " in name}
    assert checked == {"ingress_nginx", "registry", "openshift", "pps_image", "agent_images",
                       "prediction_environment", "management_agent"}, checked
    assert touched(good) and "Check the cluster's version, nodes and permissions" in touched(good)[0], touched(good)

    left_out = cluster.run("site.yml", {"mlops_agent_images_version": "latest"}, tags="preflight",
                           skip_tags="agent_images")
    assert "Refusing mlops_agent_images_version 'latest'" not in left_out.failure(), left_out.failure()
    assert "Check the cluster's version" in touched(left_out)[0], touched(left_out)


def test_skipping_the_preflight_keeps_the_settings_checks_up_front(cluster):
    run = cluster.run("site.yml", {"mlops_agent_images_version": "latest"}, skip_tags="preflight")
    assert run.returncode != 0
    assert "Refusing mlops_agent_images_version 'latest'" in run.failure(), run.failure()
    assert not touched(run), touched(run)
    assert run.document["plays"][0]["play"]["name"] == "Every stage's settings, before any stage changes anything"


def test_preflight_with_a_stage_checks_that_stages_settings_only(cluster):
    run = cluster.run("site.yml", {"mlops_agent_images_version": "latest"}, tags="preflight,registry")
    assert "Refusing mlops_agent_images_version 'latest'" not in run.failure(), run.failure()
    names = [name for name, _action, _result in ran(run)]
    assert "Registry settings" in names and not [name for name in names if "agent_images :" in name], names
    assert "Check the cluster's version" in touched(run)[0], touched(run)


def test_an_awx_survey_answer_becomes_the_setting_and_an_empty_one_keeps_the_inventorys(cluster, tmp_path):
    """AWX sends an optional question left empty as "" or null; asked as mlops_survey_<setting>, it must not wipe the
    inventory's value, and an answer must win over it (playbooks/tasks/survey_answers.yml)."""
    playbook = tmp_path / "answers.yml"
    playbook.write_text(json.dumps([{
        "hosts": "clusters", "gather_facts": False,
        "tasks": [{"name": "answers", "ansible.builtin.import_tasks": str(REPO / "playbooks/tasks/survey_answers.yml")},
                  {"name": "seen", "ansible.builtin.debug": {"msg": {
                      name: f"{{{{ {name} | default('(unset)') }}}}" for name in (
                          "mlops_pps_image_archive", "mlops_registry_vendor", "mlops_prediction_environment_name",
                          "mlops_datarobot_endpoint", "mlops_agent_images_method")}}}]}]))
    run = cluster.run(str(playbook), {"mlops_survey_pps_image_archive": "", "mlops_survey_registry_vendor": None,
                                      "mlops_survey_prediction_environment_name": "from-the-survey",
                                      "mlops_survey_agent_images_method": "present"})
    assert run.returncode == 0, run.stdout[-3000:]
    seen = next(result["msg"] for name, _action, result in ran(run) if name == "seen")
    archive = str(cluster.tmp / "datarobot-portable-prediction-api-9.2.0.tar.gz")
    assert seen == {"mlops_pps_image_archive": archive,  # "" kept the inventory's
                    "mlops_registry_vendor": "(unset)",  # null set nothing: the role's default applies
                    "mlops_prediction_environment_name": "from-the-survey",
                    "mlops_datarobot_endpoint": "https://datarobot.invalid",  # unanswered
                    "mlops_agent_images_method": "present"}, seen


def test_site_yml_takes_the_survey_answer_before_it_checks_the_settings(cluster):
    run = cluster.run("site.yml", {"mlops_survey_registry_vendor": "quay"})
    assert run.returncode != 0
    assert "mlops_registry_vendor" in run.failure() and "quay" in run.failure(), run.failure()
    assert not touched(run), touched(run)


@pytest.mark.parametrize("playbook", sorted(str(path.relative_to(REPO)) for path in (REPO / "playbooks").glob("*.yml")
                                            if path.name not in ("summary.yml",)))
def test_every_playbook_takes_the_survey_answers_first(playbook):
    import yaml

    first = yaml.safe_load((REPO / playbook).read_text())[0]
    tasks = first.get("pre_tasks") or first.get("tasks")
    assert tasks[0].get("ansible.builtin.import_tasks") == "tasks/survey_answers.yml", tasks[0]
