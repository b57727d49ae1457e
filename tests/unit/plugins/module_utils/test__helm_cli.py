from __future__ import annotations

import json
import os
import re
import sys

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    ChartSource,
    Helm,
    HelmError,
    ReleaseNotFound,
    StoppedWaiting,
    BackgroundCommand,
    Child,
    parse_helm_version,
    resolve_chart,
    run_child,
    unsupported,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import InvalidReleaseRequest


class Recorder:
    """A helm runner that records argv and answers from a queue."""

    def __init__(self, *answers: tuple[int, str, str]) -> None:
        self.answers = list(answers) or [(0, "", "")]
        self.calls: list[list[str]] = []
        self.stdins: list[str | None] = []

    def __call__(self, argv, stdin=None):
        self.calls.append(list(argv))
        self.stdins.append(stdin)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Background:
    """A spawned helm that finishes after `polls` polls with `answer`; records whether it was stopped."""

    def __init__(self, polls: int, answer: tuple[int, str, str]) -> None:
        self.polls, self.answer, self.stopped = polls, answer, False

    def poll(self):
        if self.stopped:
            return -15
        self.polls -= 1
        return None if self.polls >= 0 else self.answer[0]

    def stop(self):
        self.stopped = True

    def result(self):
        return (-15, "", "Error: context canceled") if self.stopped else self.answer


@pytest.mark.parametrize("text, expected", [
    ("v3.19.5+gabc", (3, 19, 5)), ("v3.8.0", (3, 8, 0)), ("version.BuildInfo{Version:\"v3.13.2\"}", (3, 13, 2)),
])
def test_helm_versions_are_read_from_any_output_shape(text, expected):
    assert parse_helm_version(text) == expected


def test_an_unreadable_version_names_binary_path():
    with pytest.raises(HelmError, match="binary_path"):
        parse_helm_version("bash: helm: command not found")


@pytest.mark.parametrize("out", ["v3.7.2", "v2.17.0", "v5.0.0", "v1.0.0", "v0.0.0"])
def test_helms_outside_the_supported_range_are_refused(out):
    helm = Helm("helm", Recorder((0, out, "")))
    with pytest.raises(HelmError, match=r"supports helm 3\.8\.0 or later 3\.x, or helm 4\.x, current version is "
                                        + re.escape(out[1:]) + ": install a supported helm or point binary_path"):
        helm.check_version()


@pytest.mark.parametrize("out, expected", [
    ("v3.8.0", (3, 8, 0)), ("v3.22.0", (3, 22, 0)), ("v4.0.0", (4, 0, 0)), ("v4.3.1", (4, 3, 1)),
    ("v4.99.0+gdeadbee", (4, 99, 0)),
])
def test_helm_3_from_3_8_and_every_helm_4_are_accepted(out, expected):
    assert Helm("helm", Recorder((0, out, ""))).check_version() == expected


@pytest.mark.parametrize("version, minimum, problem", [
    ((3, 8, 0), None, None), ((4, 0, 0), None, None), ((3, 7, 9), None, "current version is 3.7.9"),
    ((5, 0, 0), None, "current version is 5.0.0"), ((3, 13, 0), (3, 14, 0), "requires helm >= 3.14.0"),
    ((4, 0, 0), (3, 14, 0), None), ((3, 7, 0), (3, 1, 0), "supports helm 3.8.0"),  # a floor cannot lower ours
])
def test_unsupported_says_why_or_nothing(version, minimum, problem):
    found = unsupported(version, "mlops_helm_binary", minimum)
    assert (found is None) if problem is None else (problem in found and found.endswith(("upgrade helm.", "at one.")))
    if found and "supports" in found:
        assert "point mlops_helm_binary at one" in found


def test_check_version_asks_for_the_bare_version():
    run = Recorder((0, "v3.14.0", ""))
    assert Helm("/opt/helm", run).check_version() == (3, 14, 0)
    assert run.calls == [["/opt/helm", "version", "--template", "{{.Version}}"]]


def test_chart_source_argv_carries_repo_and_version():
    assert ChartSource("bosun", "1.2.3", "https://charts.example").argv() == [
        "bosun", "--repo", "https://charts.example", "--version", "1.2.3"]
    assert ChartSource("repo/bosun").argv() == ["repo/bosun"]


def test_resolve_chart_tells_paths_repos_and_oci_apart(tmp_path):
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("name: c\n")
    assert resolve_chart(str(chart)).ref == str(chart)
    assert resolve_chart(str(chart)).argv() == [str(chart)]
    assert resolve_chart("datarobot/agent", "1.2.0").argv() == ["datarobot/agent", "--version", "1.2.0"]
    assert resolve_chart("agent", "1.2.0", "https://charts.example.com").argv() == [
        "agent", "--repo", "https://charts.example.com", "--version", "1.2.0"]
    oci = "oci://r.example/charts/bosun"
    assert resolve_chart(oci, "1.0").argv() == [oci, "--version", "1.0"]
    assert resolve_chart("bosun", repo_url="https://x").repo_url == "https://x"
    assert resolve_chart("repo/bosun").ref == "repo/bosun"
    with pytest.raises(InvalidReleaseRequest, match="does not exist"):
        resolve_chart(str(tmp_path / "missing.tgz"))
    with pytest.raises(InvalidReleaseRequest, match="without Chart.yaml"):
        resolve_chart(str(tmp_path))
    with pytest.raises(InvalidReleaseRequest, match="neither an existing path nor repo/name"):
        resolve_chart("bosun-no-slash")


def test_upgrade_argv_is_a_list_with_every_option():
    run = Recorder()
    Helm("helm", run).upgrade("bosun", "ns", ChartSource("/c hart", "1.0"), '{"apiToken": "s3cret"}', wait=True,
                              timeout=300, create_namespace=True, description="by ansible")
    assert run.calls == [["helm", "upgrade", "bosun", "/c hart", "--version", "1.0", "--install", "-n", "ns",
                          "--reset-values", "--values", "-", "--wait", "--timeout", "300s",
                          "--create-namespace", "--description", "by ansible"]]
    assert run.stdins == ['{"apiToken": "s3cret"}']  # the values go to helm's standard input, not into argv


@pytest.mark.parametrize("version, applied", [((3, 22, 0), []), ((4, 0, 0), ["--server-side=true", "--force-conflicts"]),
                                              ((4, 3, 1), ["--server-side=true", "--force-conflicts"])])
def test_helm_4_upgrades_and_rolls_back_server_side_with_the_release_winning_conflicts(version, applied):
    run = Recorder()
    helm = Helm("helm", run, version)
    helm.upgrade("bosun", "ns", ChartSource("/c"), "{}", wait=True, timeout=60, create_namespace=False,
                 description="d")
    helm.rollback("bosun", "ns", 1, wait=True, timeout=60)
    upgrade, rollback = run.calls
    assert upgrade[:10 + len(applied)] == ["helm", "upgrade", "bosun", "/c", "--install", "-n", "ns",
                                           "--reset-values", "--values", "-", *applied]
    assert [arg for arg in upgrade if arg in ("--server-side=true", "--force-conflicts")] == applied
    assert rollback == ["helm", "rollback", "bosun", "1", "-n", "ns", *applied, "--wait", "--timeout", "60s"]


@pytest.mark.parametrize("version, flag", [((3, 12, 0), "--dry-run"), ((3, 13, 0), "--dry-run=server")])
def test_render_uses_server_dry_run_when_helm_has_it(version, flag):
    document = {"chart": {"metadata": {"name": "bosun", "version": "1.2", "appVersion": "9.1"}},
                "manifest": "kind: X\n", "config": {"a": 1}}
    run = Recorder((0, json.dumps(document), ""))
    rendered = Helm("helm", run, version).render("bosun", "ns", ChartSource("/c"), '{"a": 1}')
    assert run.calls[0][-5:] == ["--values", "-", flag, "-o", "json"] and run.stdins == ['{"a": 1}']
    assert (rendered.chart, rendered.app_version, rendered.values) == ("bosun-1.2", "9.1", {"a": 1})


def test_history_is_sorted_and_a_missing_release_has_none():
    entries = [{"revision": 2, "status": "failed"}, {"revision": 1, "status": "superseded"}]
    assert [r.revision for r in Helm("helm", Recorder((0, json.dumps(entries), ""))).history("b", "ns")] == [1, 2]
    assert Helm("helm", Recorder((1, "", "Error: release: not found"))).history("b", "ns") == []


def test_errors_carry_a_hint_and_release_not_found_is_its_own_class():
    with pytest.raises(HelmError, match="helm cannot reach the cluster") as caught:
        unreachable = Recorder((1, "", "Error: Kubernetes cluster unreachable"))
        Helm("helm", unreachable).rollback("b", "ns", 1, wait=False, timeout=1)
    assert caught.value.stderr == "Error: Kubernetes cluster unreachable"
    with pytest.raises(ReleaseNotFound):
        Helm("helm", Recorder((1, "", "Error: release: not found"))).release("b", "ns", 3)


def test_a_hopeless_wait_stops_helm_and_says_why():
    running = Background(polls=5, answer=(0, "", ""))
    helm = Helm("helm", Recorder(), spawn=lambda argv, stdin: running)
    reasons = iter([None, "ImagePullBackOff on bosun"])
    with pytest.raises(StoppedWaiting, match="ImagePullBackOff"):
        helm.upgrade("b", "ns", ChartSource("/c"), "/v", wait=True, timeout=60, create_namespace=False,
                     description="d", watch=lambda: next(reasons), sleep=lambda _: None)
    assert running.stopped


def test_a_wait_that_finishes_is_checked_like_any_run():
    running = Background(polls=2, answer=(1, "", "Error: timed out waiting for the condition"))
    helm = Helm("helm", Recorder(), spawn=lambda argv, stdin: running)
    with pytest.raises(HelmError, match="did not become ready within wait_timeout"):
        helm.upgrade("b", "ns", ChartSource("/c"), "/v", wait=True, timeout=60, create_namespace=False,
                     description="d", watch=lambda: None, sleep=lambda _: None)
    assert not running.stopped


def test_release_labels_mark_an_upgrade_and_find_the_latest_revision_that_carries_them():
    listed = json.dumps([{"name": "bosun", "namespace": "ns", "revision": "4", "status": "pending-upgrade"}])
    runner = Recorder((0, "", ""), (0, listed, ""), (0, "[]", ""))
    helm = Helm("helm", runner, version=(3, 13, 0))
    assert helm.labels_supported and not Helm("helm", runner, version=(3, 12, 3)).labels_supported
    helm.upgrade("bosun", "ns", ChartSource("/chart"), "{}", wait=False, timeout=5, create_namespace=False,
                 description="d", labels={"mlops.datarobot.com/write": "abc"})
    assert runner.calls[0][-2:] == ["--labels", "mlops.datarobot.com/write=abc"]
    assert helm.labelled_revision("bosun", "ns", "mlops.datarobot.com/write", "abc") == 4
    assert runner.calls[1][1:] == ["list", "-n", "ns", "--filter", "^bosun$", "--all", "--selector",
                                   "mlops.datarobot.com/write=abc", "-o", "json"]
    assert helm.labelled_revision("bosun", "ns", "mlops.datarobot.com/write", "other") is None


@pytest.mark.parametrize("version, every_status", [((3, 22, 0), ["--all"]), ((4, 3, 1), [])])
def test_the_labelled_revision_is_looked_for_among_releases_of_every_status(version, every_status):
    """helm 3 lists deployed and failed releases unless told --all; helm 4 lists all, and refuses --all."""
    listed = json.dumps([{"name": "bosun", "namespace": "ns", "revision": "7", "status": "pending-upgrade"}])
    runner = Recorder((0, listed, ""))
    assert Helm("helm", runner, version=version).labelled_revision("bosun", "ns", "k", "v") == 7
    assert runner.calls == [["helm", "list", "-n", "ns", "--filter", "^bosun$", *every_status, "--selector", "k=v",
                             "-o", "json"]]


def test_when_an_uninstall_started_and_a_charts_own_name():
    status = json.dumps({"info": {"status": "uninstalling", "deleted": "2026-11-25T12:00:00.5Z"}})
    runner = Recorder((0, status, ""), (0, json.dumps({"info": {"deleted": ""}}), ""),
                      (0, "apiVersion: v2\nname: datarobot-management-agent\ndependencies:\n  - name: sub\n", ""),
                      (0, "apiVersion: v2\n", ""))
    helm = Helm("helm", runner, version=(3, 19, 0))
    assert helm.deleted_at("bosun", "ns", 2) == "2026-11-25T12:00:00.5Z" and helm.deleted_at("bosun", "ns", 2) == ""
    assert helm.chart_name(ChartSource("/chart", "1.2.0")) == "datarobot-management-agent"
    assert runner.calls[2][1:] == ["show", "chart", "/chart", "--version", "1.2.0"]
    with pytest.raises(HelmError, match="gave no chart name"):
        helm.chart_name(ChartSource("/chart"))


# A real child: prints what it read on stdin, then its environment as JSON; stands in for helm.
ECHO = [sys.executable, "-c", "import json, os, sys; print(json.dumps({'stdin': sys.stdin.read(), 'env': dict(os.environ)}))"]


def test_a_foreground_child_reads_the_values_on_stdin_and_gets_only_its_environment():
    rc, out, err = run_child(ECHO, '{"apiToken": "s3cret"}', Child({"PATH": os.environ["PATH"], "HELM_X": "1"}))
    seen = json.loads(out)
    assert rc == 0 and seen["stdin"] == '{"apiToken": "s3cret"}', err
    assert {key: value for key, value in seen["env"].items() if key != "LC_CTYPE"} == {"PATH": os.environ["PATH"],
                                                                                       "HELM_X": "1"}


def test_a_background_child_reads_the_values_on_stdin_and_gets_only_its_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATAROBOT_API_TOKEN", "not-for-helm")
    running = BackgroundCommand(ECHO, Child({"PATH": os.environ["PATH"]}), '{"a": 1}' * 20000, str(tmp_path))
    rc, out, err = running.result()
    seen = json.loads(out)
    assert rc == 0 and seen["stdin"] == '{"a": 1}' * 20000, err  # more than a pipe holds: written from a thread
    assert "DATAROBOT_API_TOKEN" not in seen["env"]
    assert not list(tmp_path.iterdir())  # its output went to unnamed files


def test_a_background_child_that_never_reads_stdin_does_not_hang():
    running = BackgroundCommand([sys.executable, "-c", "pass"], Child({"PATH": os.environ["PATH"]}), "x" * 200000)
    assert running.result()[0] == 0


def test_a_missing_binary_is_a_helm_error():
    with pytest.raises(HelmError, match="helm cannot be run"):
        run_child(["/nonexistent/helm", "version"], None, Child({}))
