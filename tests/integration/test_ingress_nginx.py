"""ingress_nginx on the rig: installs the offline chart (tests/rig/assets), idempotent, honest in check mode."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ansible_cli import REPO, run_playbook
from conftest import kubectl

DECODER_SOURCE = REPO / "tests" / "tools" / "nginx-config-decode"
CACHE = Path(os.environ.get("RIG_BIN_CACHE", Path.home() / ".cache" / "datarobot-mlops-rig"))


def decoded_by_the_controller(config: dict[str, str]) -> dict:
    """The proxy settings the controller would run with (tests/tools/nginx-config-decode)."""
    binary = CACHE / "nginx-config-decode-mapstructure-v1.5.0" / "nginx-config-decode"
    if not binary.exists():
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=DECODER_SOURCE, check=True, timeout=600,
                       env={**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"})
    proc = subprocess.run([str(binary)], input=json.dumps(config), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def release(rig):
    """One install of the controller for this module, with its own namespace and class."""
    names = {"mlops_ingress_nginx_namespace": "t-ingress", "mlops_ingress_nginx_class": "mlops-t",
             "mlops_ingress_nginx_release": "t-ingress"}
    first = run_playbook("playbooks/ingress.yml", extra_vars=names)
    assert first.returncode == 0, first.failure() or first.stderr
    yield names, first
    subprocess.run([os.environ["HELM"], "uninstall", "t-ingress", "-n", "t-ingress", "--wait"], check=False,
                   capture_output=True)
    kubectl("delete", "namespace", "t-ingress", "--wait=false", check=False)


def test_first_run_installs_and_the_controller_is_available(release):
    names, first = release
    assert first.task("Install or upgrade the chart and wait for the controller")["changed"] is True
    kubectl("-n", "t-ingress", "wait", "--for=condition=Available", "deployment/t-ingress-ingress-nginx-controller",
            "--timeout=10s")
    ingress_class = json.loads(kubectl("get", "ingressclass", "mlops-t", "-o", "json").stdout)
    assert ingress_class["spec"]["controller"] == "k8s.io/ingress-nginx"
    hpa = json.loads(kubectl("-n", "t-ingress", "get", "hpa", "-o", "json").stdout)["items"][0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 3)
    service = json.loads(kubectl("-n", "t-ingress", "get", "service", "-o", "json").stdout)["items"]
    assert any(s["metadata"]["name"].endswith("controller-metrics") for s in service)


def test_the_controller_parses_every_proxy_setting(release):
    config = json.loads(kubectl("-n", "t-ingress", "get", "configmap", "t-ingress-ingress-nginx-controller",
                                "-o", "json").stdout)["data"]
    assert {k: config[k] for k in ("proxy-body-size", "proxy-read-timeout", "proxy-send-timeout",
                                   "proxy-connect-timeout")} == {
        "proxy-body-size": "51m", "proxy-read-timeout": "605", "proxy-send-timeout": "605",
        "proxy-connect-timeout": "65"}
    parsed = decoded_by_the_controller(config)
    assert parsed["error"] is None
    assert parsed["settings"] == {"proxy-body-size": "51m", "proxy-read-timeout": 605, "proxy-send-timeout": 605,
                                  "proxy-connect-timeout": 65}


def test_the_vendor_pages_duration_form_would_be_dropped():
    """Why the role writes plain seconds: the controller cannot read "605s" and keeps its defaults."""
    parsed = decoded_by_the_controller({"proxy-body-size": "51m", "proxy-read-timeout": "605s",
                                        "proxy-send-timeout": "605s", "proxy-connect-timeout": "65s"})
    assert "cannot parse 'proxy-read-timeout' as int" in parsed["error"]
    assert parsed["settings"]["proxy-read-timeout"] == 60 and parsed["settings"]["proxy-connect-timeout"] == 5


def test_second_run_changes_nothing(release):
    names = release[0]
    again = run_playbook("playbooks/ingress.yml", extra_vars=names)
    assert again.returncode == 0 and again.changed == 0
    # kubernetes.core.helm is given no option it deprecates (wait_timeout: timeout since kubernetes.core 2.3.0)
    assert "parameter is deprecated" not in again.stdout + again.stderr, again.stderr


def test_user_values_win_and_check_mode_changes_nothing(release):
    names = release[0]
    before = kubectl("-n", "t-ingress", "get", "configmap", "t-ingress-ingress-nginx-controller",
                     "-o", "jsonpath={.data}").stdout
    revision = json.loads(subprocess.run([os.environ["HELM"], "status", "t-ingress", "-n", "t-ingress", "-o",
                                          "json"], capture_output=True, text=True, check=True).stdout)["version"]
    values = {"controller": {"admissionWebhooks": {"enabled": False}, "service": {"type": "ClusterIP"},
                             "config": {"proxy-body-size": "99m"}}}
    checked = run_playbook("playbooks/ingress.yml", extra_vars={**names, "mlops_ingress_nginx_values": values}, check=True)
    assert checked.returncode == 0
    assert checked.task("Install or upgrade the chart and wait for the controller")["changed"] is True
    after = kubectl("-n", "t-ingress", "get", "configmap", "t-ingress-ingress-nginx-controller",
                    "-o", "jsonpath={.data}").stdout
    assert after == before
    status = json.loads(subprocess.run([os.environ["HELM"], "status", "t-ingress", "-n", "t-ingress", "-o",
                                        "json"], capture_output=True, text=True, check=True).stdout)
    assert status["version"] == revision


def test_a_controller_installed_by_someone_else_is_left_alone(rig):
    kubectl("create", "-f", "-", stdin=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "theirs"},
        "spec": {"controller": "k8s.io/ingress-nginx"}}))
    try:
        run = run_playbook("playbooks/ingress.yml", extra_vars={
            "mlops_ingress_nginx_class": "theirs", "mlops_ingress_nginx_namespace": "t-theirs", "mlops_ingress_nginx_release": "t-theirs"})
        assert run.returncode == 0 and run.changed == 0
        assert "already served by an NGINX controller" in run.task("Leave the existing controller alone")["msg"]
        assert kubectl("get", "namespace", "t-theirs", check=False).returncode != 0
    finally:
        kubectl("delete", "ingressclass", "theirs")


def test_a_controller_that_never_becomes_ready_fails_with_diagnostics(rig):
    """Also: an integer wait timeout (seconds; the default is the duration 5m) reaches helm as a duration."""
    values = {"controller": {"admissionWebhooks": {"enabled": False}, "service": {"type": "ClusterIP"},
                             "nodeSelector": {"pool": "does-not-exist"}}}
    try:
        run = run_playbook("playbooks/ingress.yml", extra_vars={
            "mlops_ingress_nginx_namespace": "t-stuck", "mlops_ingress_nginx_class": "mlops-stuck", "mlops_ingress_nginx_release": "t-stuck",
            "mlops_ingress_nginx_values": values, "mlops_ingress_nginx_wait_timeout": 15})
        assert run.returncode != 0
        message = run.failure()
        assert message.startswith("ingress_nginx failed:")
        assert "Pending" in message and "FailedScheduling" in message
    finally:
        subprocess.run([os.environ["HELM"], "uninstall", "t-stuck", "-n", "t-stuck"], check=False,
                       capture_output=True)
        kubectl("delete", "namespace", "t-stuck", "--wait=false", check=False)


def test_skipped_on_openshift_with_the_reason(openshift_rig):
    run = run_playbook("site.yml", extra_vars={"mlops_ingress_nginx_namespace": "t-openshift"}, tags="preflight,ingress")
    assert run.returncode == 0, run.failure()
    assert "OpenShift routes traffic through its built-in router" in run.task("Say why ingress is skipped")["msg"]
    assert run.task("Install or upgrade the chart and wait for the controller").get("skipped") is True
    assert kubectl("get", "namespace", "t-openshift", check=False).returncode != 0


def test_a_local_chart_archive_older_than_4_is_refused_before_anything_changes(rig, tmp_path):
    """The >= 4.0.0 floor holds for a local .tgz too (its Chart.yaml), not only for a repository chart's version."""
    chart = tmp_path / "ingress-nginx"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: ingress-nginx\nversion: 3.41.0\nappVersion: 0.51.0\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-old\n")
    subprocess.run([os.environ["HELM"], "package", str(chart), "-d", str(tmp_path)], check=True, capture_output=True)
    archive = tmp_path / "ingress-nginx-3.41.0.tgz"
    names = {"mlops_ingress_nginx_namespace": "t-old-chart", "mlops_ingress_nginx_class": "mlops-old",
             "mlops_ingress_nginx_release": "t-old-chart", "mlops_ingress_nginx_chart_repo_url": ""}
    try:
        old = run_playbook("playbooks/ingress.yml", extra_vars={**names, "mlops_ingress_nginx_chart_ref": str(archive)})
        assert old.returncode != 0
        message = old.failure()
        assert f"The chart {archive} is ingress-nginx 3.41.0, not ingress-nginx 4.0.0 or later" in message, message
        missing = run_playbook("playbooks/ingress.yml",
                               extra_vars={**names, "mlops_ingress_nginx_chart_ref": str(tmp_path / "none.tgz")})
        assert missing.returncode != 0
        assert f"Cannot read the chart {tmp_path / 'none.tgz'}" in missing.failure(), missing.failure()
        for run in (old, missing):
            ran = [task["task"]["name"] for play in run.document["plays"] for task in play["tasks"]]
            assert not any(name.endswith("Install or upgrade the chart and wait for the controller") for name in ran)
        assert kubectl("get", "namespace", "t-old-chart", check=False).returncode != 0
    finally:
        subprocess.run([os.environ["HELM"], "uninstall", "t-old-chart", "-n", "t-old-chart"], check=False,
                       capture_output=True)
        kubectl("delete", "namespace", "t-old-chart", "--wait=false", check=False)


@pytest.mark.parametrize("helm_under_test", ["HELM4"], indirect=True)
def test_helm_4_installs_upgrades_and_then_changes_nothing(rig, helm_under_test):
    """The stage under helm 4 (kubernetes.core 6.6.0 from .collections, `make setup`): install, a second run that
    changes nothing, and an upgrade with a user value, each through kubernetes.core.helm and helm 4."""
    names = {"mlops_ingress_nginx_namespace": "t-ingress4", "mlops_ingress_nginx_class": "mlops-t4",
             "mlops_ingress_nginx_release": "t-ingress4", "mlops_helm_binary": helm_under_test}
    try:
        first = run_playbook("playbooks/ingress.yml", extra_vars=names)
        assert first.returncode == 0, first.failure() or first.stderr
        assert first.task("Install or upgrade the chart and wait for the controller")["changed"] is True
        again = run_playbook("playbooks/ingress.yml", extra_vars=names)
        assert again.returncode == 0 and again.changed == 0, again.failure()
        upgraded = run_playbook("playbooks/ingress.yml", extra_vars={
            **names, "mlops_ingress_nginx_values": {"controller": {"config": {"use-gzip": "true"}}}})
        assert upgraded.returncode == 0 and upgraded.changed > 0, upgraded.failure()
        config = json.loads(kubectl("-n", "t-ingress4", "get", "configmap", "t-ingress4-ingress-nginx-controller",
                                    "-o", "json").stdout)["data"]
        assert config["use-gzip"] == "true"
        status = json.loads(subprocess.run([helm_under_test, "status", "t-ingress4", "-n", "t-ingress4", "-o", "json"],
                                           capture_output=True, text=True, check=True).stdout)
        assert (status["version"], status["info"]["status"]) == (2, "deployed")
    finally:
        subprocess.run([helm_under_test, "uninstall", "t-ingress4", "-n", "t-ingress4", "--wait"], check=False,
                       capture_output=True)
        kubectl("delete", "namespace", "t-ingress4", "--wait=false", check=False)
