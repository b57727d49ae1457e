"""The release reconciler's logic without a cluster: values, masking, drift, diagnostics, and its decisions
driven through a fake helm and a fake cluster."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    ChartSource,
    Helm,
    HelmError,
    StoppedWaiting,
    parse_helm_version,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import (
    ApiUnavailable,
    KubernetesAccessError,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_cluster import (
    label_selector,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_guard import ReleaseGuard
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_reconciler import (
    MASK,
    InvalidReleaseRequest,
    Masker,
    Reconciler,
    ReleaseBusy,
    ReleaseFailed,
    ReleaseSpec,
    compose_values,
    drift_of,
    format_diagnostics,
    is_sensitive_key,
    load_values_file,
    manifests_equal,
    merge_values,
    parse_manifest,
    pod_problems,
    related_events,
    repair_operations,
    rollout_state,
    values_equal,
)

REF = ("apps/v1", "Deployment", "ns", "bosun-agent")


def deployment(image: str = "repo/agent:1.0", replicas: int = 1, env: list | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "agent", "image": image}
    if env is not None:
        container["env"] = env
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bosun-agent"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [container]}}}}


# ---------------------------------------------------------------- values


def test_merge_is_deep_for_maps_and_replaces_lists_and_scalars():
    base = {"datarobot": {"url": "a", "envId": "1"}, "extraArgs": ["x"], "replicas": 1}
    override = {"datarobot": {"envId": "2"}, "extraArgs": ["y"], "replicas": None}
    assert merge_values(base, override) == {"datarobot": {"url": "a", "envId": "2"}, "extraArgs": ["y"],
                                            "replicas": None}
    assert base["datarobot"]["envId"] == "1"  # inputs untouched


def test_values_win_over_files_and_later_files_over_earlier():
    files = [{"a": {"b": 1, "c": 1}}, {"a": {"c": 2}}]
    assert compose_values(files, {"a": {"d": 3}}) == {"a": {"b": 1, "c": 2, "d": 3}}


def test_values_compare_as_helm_stores_them():
    assert values_equal({"replicas": 1, "ratio": 1.0}, {"replicas": 1.0, "ratio": 1})
    assert values_equal(None, {})
    assert not values_equal({"tag": "1"}, {"tag": 1})
    assert not values_equal({"a": {"b": None}}, {"a": {}})


def test_values_file_errors_name_the_file(tmp_path):
    with pytest.raises(InvalidReleaseRequest, match="does not exist"):
        load_values_file(str(tmp_path / "missing.yaml"))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(InvalidReleaseRequest, match="list.yaml holds a list"):
        load_values_file(str(listing))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_values_file(str(empty)) == {}


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize("key, sensitive", [
    ("apiToken", True), ("password", True), ("registryPassword", True), ("secret", True), ("api_key", True),
    ("apiSecretName", False), ("secretName", False), ("secretKeyRef", False), ("tokenFile", False),
    ("automountServiceAccountToken", True), ("repository", False), ("auth", True),
])
def test_sensitive_keys(key, sensitive):
    assert is_sensitive_key(key) is sensitive


def test_values_are_masked_by_key_and_by_path_and_their_strings_everywhere():
    masker = Masker(["imageBuilder.extraArgs"])
    values = {"datarobot": {"apiToken": "tok-123456", "apiSecretName": "mlops-api-key"},
              "imageBuilder": {"extraArgs": ["--password=hunter22"]}, "flag": {"enabled": True}}
    masker.collect_values(values)
    masked = masker.values(values)
    assert masked["datarobot"] == {"apiToken": MASK, "apiSecretName": "mlops-api-key"}
    assert masked["imageBuilder"]["extraArgs"] == [MASK]
    assert masked["flag"] == {"enabled": True}
    assert masker.text("token is tok-123456, args --password=hunter22") == f"token is {MASK}, args {MASK}"
    assert values["datarobot"]["apiToken"] == "tok-123456"  # a copy was masked


def test_manifest_objects_are_masked():
    """Secret data and sensitive env values are learned separately (distinct values, so neither covers for the other)."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"secret": base64.b64encode(b"secret-data-token").decode()}, "stringData": {"other": "x"}}
    workload = deployment(env=[{"name": "MLOPS_API_TOKEN", "value": "env-var-token"}, {"name": "URL", "value": "u"}])
    masker = Masker()
    masker.collect_manifest([secret, workload])
    assert "secret-data-token" in masker.secrets
    assert "env-var-token" in masker.secrets
    shown = masker.manifest_object(secret)
    assert shown["data"] == {"secret": MASK} and shown["stringData"] == {"other": MASK}
    # a fresh Masker knows no values: the env value must be masked by its name alone
    env = Masker().manifest_object(workload)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "MLOPS_API_TOKEN", "value": MASK}, {"name": "URL", "value": "u"}]
    shown_config = json.dumps(masker.manifest_object(
        {"kind": "ConfigMap", "data": {"agent.yaml": "token: secret-data-token\nkey: env-var-token"}}))
    assert "secret-data-token" not in shown_config and "env-var-token" not in shown_config


# ---------------------------------------------------------------- manifests and drift


def test_manifests_compare_as_objects_not_text():
    text_a = "---\n# Source: a.yaml\nkind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndata: {k: v}\n"
    text_b = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n---\n"
    assert manifests_equal(parse_manifest(text_a), parse_manifest(text_b), "ns")
    assert not manifests_equal(parse_manifest(text_a), parse_manifest(text_b.replace("k: v", "k: w")), "ns")


def test_no_drift_when_live_only_adds_defaults():
    live = deployment(env=[{"name": "A", "value": "1"},
                           {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "x"}}}])
    live["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicy="IfNotPresent", resources={})
    live["status"] = {"replicas": 1}
    desired = deployment(env=[{"name": "A", "value": 1}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}])
    assert drift_of(REF, desired, live) == []


def test_set_image_scale_and_env_edits_are_drift():
    desired = deployment(env=[{"name": "A", "value": "1"}, {"name": "MY_TOKEN", "value": "t0k3n-value"}])
    live = deployment(image="repo/agent:hacked", replicas=3, env=[{"name": "A", "value": "2"}, {"name": "EXTRA",
                                                                                                "value": "x"}])
    found = {item.field: item for item in drift_of(REF, desired, live)}
    assert set(found) == {"spec.replicas", "spec.template.spec.containers[agent].image",
                          "spec.template.spec.containers[agent].env[A]",
                          "spec.template.spec.containers[agent].env[EXTRA]",
                          "spec.template.spec.containers[agent].env[MY_TOKEN]"}
    image = found["spec.template.spec.containers[agent].image"]
    assert (image.live, image.desired, image.path) == ("repo/agent:hacked", "repo/agent:1.0",
                                                       "/spec/template/spec/containers/0/image")
    token = found["spec.template.spec.containers[agent].env[MY_TOKEN]"].public(Masker())
    assert token == {"object": "Deployment/bosun-agent", "field": "spec.template.spec.containers[agent].env[MY_TOKEN]",
                     "live": "(absent)", "desired": MASK}


def test_repair_is_one_guarded_json_patch_per_object():
    desired = deployment(env=[{"name": "A", "value": "1"}])
    live = deployment(image="other", replicas=2, env=[{"name": "A", "value": "2"}, {"name": "B", "value": "3"}])
    operations = repair_operations(drift_of(REF, desired, live), "42")
    assert operations == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "add", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/spec/template/spec/containers/0/image", "value": "repo/agent:1.0"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env", "value": [{"name": "A", "value": "1"}]},
    ]
    no_env = repair_operations(drift_of(REF, deployment(), deployment(env=[{"name": "B", "value": "3"}])), None)
    assert no_env == [{"op": "remove", "path": "/spec/template/spec/containers/0/env"}]


def test_configmap_and_secret_data_drift():
    ref = ("v1", "ConfigMap", "ns", "cfg")
    found = drift_of(ref, {"kind": "ConfigMap", "data": {"a": "1", "b": "2"}},
                     {"kind": "ConfigMap", "data": {"a": "9", "c": "3"}})
    assert [(d.field, d.live, d.desired) for d in found] == [("data[a]", "9", "1"), ("data[b]", "(absent)", "2"),
                                                             ("data[c]", "3", "(absent)")]
    assert repair_operations(found, None) == [{"op": "add", "path": "/data", "value": {"a": "1", "b": "2"}}]
    secret_ref = ("v1", "Secret", "ns", "s")
    desired = {"kind": "Secret", "stringData": {"secret": "new-token"}}
    live = {"kind": "Secret", "data": {"secret": base64.b64encode(b"old-token").decode()}}
    [item] = drift_of(secret_ref, desired, live)
    assert item.public(Masker()) == {"object": "Secret/s", "field": "data[secret]", "live": MASK, "desired": MASK}
    assert drift_of(secret_ref, desired, {"kind": "Secret",
                                          "data": {"secret": base64.b64encode(b"new-token").decode()}}) == []


def test_a_deleted_object_is_drift_helm_must_repair():
    [item] = drift_of(("v1", "ConfigMap", "ns", "cfg"), {"kind": "ConfigMap"}, None)
    assert item.path is None and item.live == "(absent)"


# ---------------------------------------------------------------- availability and diagnostics


def _status(**status):
    live = deployment()
    live["metadata"]["generation"] = 2
    live["status"] = {"observedGeneration": 2, **status}
    return live


def test_rollout_state():
    ok = _status(replicas=1, updatedReplicas=1, availableReplicas=1, conditions=[{"type": "Available", "status": "True"}])
    assert rollout_state(ok)[0] is True
    terminating = _status(replicas=2, updatedReplicas=1, availableReplicas=1)
    assert "1 old replicas are still terminating" in rollout_state(terminating)[2]
    assert "0 of 1 updated replicas available" in rollout_state(_status(replicas=2, updatedReplicas=1))[2]
    stale = _status(replicas=1, updatedReplicas=1, availableReplicas=1)
    stale["status"]["observedGeneration"] = 1
    assert "not acted on the latest spec" in rollout_state(stale)[2]
    hopeless = _status(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    assert rollout_state(hopeless)[1] is True


def _pod(name: str, ready: bool, container_state: dict, **extra) -> dict:
    return {"metadata": {"name": name}, "spec": {"nodeName": "n1"},
            "status": {"phase": "Running" if ready else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "agent", "image": "repo/agent:x", "ready": ready,
                                              "restartCount": extra.get("restarts", 0), "state": container_state,
                                              "lastState": extra.get("last", {})}]}}


def test_pod_problems_name_the_waiting_reason():
    assert pod_problems(_pod("ok", True, {"running": {}})) is None
    pulling = pod_problems(_pod("p1", False, {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}}))
    assert pulling["pod"] == "p1" and pulling["containers"][0]["reason"] == "ImagePullBackOff"
    crashing = pod_problems(_pod("p2", False, {"waiting": {"reason": "CrashLoopBackOff"}}, restarts=4,
                                 last={"terminated": {"reason": "Error", "exitCode": 2}}))
    assert crashing["containers"][0]["last_termination"] == {"reason": "Error", "exit_code": 2}


def test_events_are_those_of_the_deployment_and_its_pods_latest_last():
    events = [
        {"type": "Warning", "reason": "Failed", "message": "Error: ImagePullBackOff", "count": 3,
         "involvedObject": {"kind": "Pod", "name": "bosun-agent-5d-abc"}, "lastTimestamp": "2026-01-01T00:00:02Z"},
        {"type": "Warning", "reason": "FailedCreate", "message": "quota",
         "involvedObject": {"kind": "ReplicaSet", "name": "bosun-agent-5d"}, "lastTimestamp": "2026-01-01T00:00:01Z"},
        {"type": "Warning", "reason": "Other", "message": "not ours",
         "involvedObject": {"kind": "Pod", "name": "ingress-1"}, "lastTimestamp": "2026-01-01T00:00:03Z"},
    ]
    picked = related_events(events, {"bosun-agent"}, ["bosun-agent-"])
    assert [event["reason"] for event in picked] == ["FailedCreate", "Failed"]


def test_diagnostics_read_as_lines():
    diagnostics = {
        "deployments": [{"name": "bosun-agent", "state": "Deployment bosun-agent: 0 of 1 updated replicas available",
                         "conditions": ["Available=False MinimumReplicasUnavailable: no"]}],
        "pods": [pod_problems(_pod("bosun-agent-1", False, {"waiting": {"reason": "ImagePullBackOff",
                                                                        "message": "Back-off pulling image"}}))],
        "events": [{"object": "Pod/bosun-agent-1", "reason": "Failed", "message": "Error: ImagePullBackOff",
                    "count": 2, "last_seen": "t"}],
    }
    text = format_diagnostics(diagnostics)
    assert "Pod bosun-agent-1 (Pending on n1) is not ready:" in text
    assert "container agent (repo/agent:x) waiting: ImagePullBackOff: Back-off pulling image" in text
    assert "Pod/bosun-agent-1: Failed: Error: ImagePullBackOff (x2)" in text


def test_label_selector():
    assert label_selector({"matchLabels": {"b": "2", "a": "1"},
                           "matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]},
                                                {"key": "gone", "operator": "DoesNotExist"}]}) == "a=1,b=2,t in (x,y),!gone"


# ---------------------------------------------------------------- helm CLI


def test_helm_version_gate_message():
    helm = Helm("helm", lambda argv: (0, "v3.7.2", ""))
    with pytest.raises(HelmError, match=r"supports helm 3.8.0 or later 3.x, or helm 4.x, current version is 3.7.2"):
        helm.check_version()
    assert parse_helm_version("v3.19.5+gabc") == (3, 19, 5)


def test_helm_errors_carry_a_hint_and_commands_are_argv_lists():
    seen = []

    def run(argv, stdin=None):
        seen.append(argv)
        return 1, "", "Error: Kubernetes cluster unreachable: Get \"https://x\": dial tcp: connection refused"

    helm = Helm("/opt/my helm/helm", run, (3, 19, 0))
    with pytest.raises(HelmError, match="helm cannot reach the cluster"):
        helm.render("bosun", "ns", ChartSource("/charts/my chart"), "/tmp/v.json")
    assert seen[0][:3] == ["/opt/my helm/helm", "upgrade", "bosun"] and "/charts/my chart" in seen[0]
    assert "--reset-values" in seen[0] and "--dry-run=server" in seen[0]


# ---------------------------------------------------------------- decisions, with a fake helm and cluster


def helm_now() -> str:
    """A revision's `updated` as helm writes it (RFC 3339, nanoseconds)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class FakeHelm:
    """Releases in memory; an upgrade 'applies' its manifest to the fake cluster. Each revision carries what helm
    keeps: its time, description and release labels (an upgrade merges its --labels into the previous revision's)."""

    labels_supported = True

    def __init__(self, cluster: "FakeCluster", manifest: str, chart: str = "agent-1.0.0") -> None:
        self.cluster, self.manifest, self.chart = cluster, manifest, chart
        self.revisions: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.fail_upgrade = False
        self.on_upgrade: Any = None  # called before an upgrade writes (another client racing us)

    def history(self, name, namespace):
        from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import Revision
        return [Revision(r["revision"], r["status"], r["chart"], "1.0", r.get("updated", "t"),
                         r.get("description", "")) for r in self.revisions]

    def release(self, name, namespace, revision):
        found = self.revisions[revision - 1]
        return found["values"], found["manifest"]

    def labelled_revision(self, name, namespace, key, value):
        latest = self.revisions[-1] if self.revisions else {}
        return latest["revision"] if (latest.get("labels") or {}).get(key) == value else None

    def deleted_at(self, name, namespace, revision):
        return self.revisions[revision - 1].get("deleted", "")

    def chart_name(self, chart):
        return self.chart.rsplit("-", 1)[0]

    def render(self, name, namespace, chart, values_file):
        from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import Rendered
        with open(values_file) as handle:
            values = json.load(handle)
        name_, version = self.chart.rsplit("-", 1)
        return Rendered(name_, version, "1.0", self.manifest.replace("IMAGE", values.get("image", "repo/agent:1.0")),
                        values)

    def upgrade(self, name, namespace, chart, values_file, **options):
        if self.on_upgrade is not None:
            self.on_upgrade()
        self.calls.append("upgrade")
        rendered = self.render(name, namespace, chart, values_file)
        for revision in self.revisions:
            if revision["status"] == "deployed" and not self.fail_upgrade:
                revision["status"] = "superseded"
        previous = (self.revisions[-1].get("labels") or {}) if self.revisions else {}
        labels = {**previous, **(options.get("labels") or {})}
        self.revisions.append({"revision": len(self.revisions) + 1, "chart": self.chart, "values": rendered.values,
                               "manifest": rendered.manifest, "status": "failed" if self.fail_upgrade else "deployed",
                               "updated": helm_now(), "description": options.get("description", ""),
                               "labels": labels})
        self.cluster.apply(parse_manifest(rendered.manifest), ready=not self.fail_upgrade)
        if self.fail_upgrade:
            raise HelmError("helm upgrade --install bosun failed: Error: UPGRADE FAILED: context deadline exceeded")

    def rollback(self, name, namespace, revision, **options):
        self.calls.append(f"rollback {revision}")
        target = self.revisions[revision - 1]
        for item in self.revisions:
            if item["status"] == "deployed":
                item["status"] = "superseded"
        self.revisions.append({**target, "revision": len(self.revisions) + 1, "status": "deployed",
                               "updated": helm_now(), "description": f"Rollback to {revision}"})
        self.cluster.apply(parse_manifest(target["manifest"]), ready=True)

    def uninstall(self, name, namespace, **options):
        self.calls.append("uninstall")
        self.revisions.clear()
        self.cluster.objects.clear()


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[tuple[str, list]] = []
        self.pod_list: list[dict[str, Any]] = []

    def apply(self, documents, ready: bool) -> None:
        for document in documents:
            live = json.loads(json.dumps(document))
            live["metadata"]["resourceVersion"] = "1"
            if live["kind"] == "Deployment":
                replicas = live["spec"].get("replicas", 1)
                live["metadata"]["generation"] = 1
                live["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                                  "availableReplicas": replicas if ready else 0,
                                  "conditions": [{"type": "Available", "status": "True" if ready else "False"}]}
                if not ready:
                    self.pod_list = [_pod(f"{live['metadata']['name']}-1", False,
                                          {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}})]
            self.objects[(live["kind"], live["metadata"]["name"])] = live

    def get(self, api_version, kind, namespace, name):
        return self.objects.get((kind, name))

    def patch(self, api_version, kind, namespace, name, operations):
        self.patches.append((f"{kind}/{name}", operations))
        live = self.objects[(kind, name)]
        for operation in operations[1:]:
            parts = operation["path"].strip("/").split("/")
            target = live
            for part in parts[:-1]:
                target = target[int(part)] if isinstance(target, list) else target[part]
            if operation["op"] == "remove":
                del target[parts[-1]]
            else:
                target[parts[-1]] = operation["value"]
        return live

    def pods(self, namespace, selector):
        return self.pod_list

    def warning_events(self, namespace):
        return [{"type": "Warning", "reason": "Failed", "message": "Error: ImagePullBackOff",
                 "involvedObject": {"kind": "Pod", "name": "bosun-agent-1"}, "lastTimestamp": "t"}]


MANIFEST = """---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bosun-agent}
spec:
  replicas: 1
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: IMAGE}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: bosun-config}
data: {url: https://app.datarobot.com}
"""


@pytest.fixture
def rig(tmp_path):
    cluster = FakeCluster()
    helm = FakeHelm(cluster, MANIFEST)
    counter = iter(range(1000))

    def write_values(values):
        path = tmp_path / f"values-{next(counter)}.json"
        path.write_text(json.dumps(values))
        return str(path)

    def reconciler(check_mode=False):
        return Reconciler(helm, cluster, Masker(), write_values, check_mode=check_mode, poll=0, sleep=lambda _: None)

    return helm, cluster, reconciler


def spec(**values) -> ReleaseSpec:
    return ReleaseSpec("bosun", "ns", ChartSource("/charts/agent"), {"apiToken": "t0k3n-abcdef", **values},
                       wait_timeout=0)


def test_install_then_nothing_then_upgrade_only_when_values_change(rig):
    helm, cluster, reconciler = rig
    first = reconciler().present(spec())
    assert (first.changed, first.action, first.values["apiToken"]) == (True, "install", MASK)
    again = reconciler().present(spec())
    assert (again.changed, again.action, again.diff) == (False, "none", [])
    assert helm.calls == ["upgrade"]
    changed = reconciler().present(spec(replicas=2))
    assert changed.reasons == ["values differ"] and helm.calls == ["upgrade", "upgrade"]


def test_check_mode_reports_without_touching_anything(rig):
    helm, cluster, reconciler = rig
    outcome = reconciler(check_mode=True).present(spec())
    assert outcome.changed and outcome.action == "install" and helm.calls == [] and cluster.objects == {}
    values_diff = outcome.diff[0]
    assert values_diff["before"] == "" and MASK in values_diff["after"] and "t0k3n" not in values_diff["after"]


def test_drift_is_patched_back_without_a_new_revision(rig):
    helm, cluster, reconciler = rig
    reconciler().present(spec())
    cluster.objects[("Deployment", "bosun-agent")]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    cluster.objects[("ConfigMap", "bosun-config")]["data"]["url"] = "https://elsewhere"
    checked = reconciler(check_mode=True).present(spec())
    assert checked.changed and checked.action == "repair" and cluster.patches == []
    repaired = reconciler().present(spec())
    assert {(d["object"], d["field"], d["live"]) for d in repaired.drift} == {
        ("Deployment/bosun-agent", "spec.template.spec.containers[agent].image", "evil:1"),
        ("ConfigMap/bosun-config", "data[url]", "https://elsewhere")}
    assert helm.calls == ["upgrade"] and len(cluster.patches) == 2
    assert reconciler().present(spec()).changed is False


def test_a_deleted_object_makes_helm_upgrade(rig):
    helm, cluster, reconciler = rig
    reconciler().present(spec())
    del cluster.objects[("ConfigMap", "bosun-config")]
    outcome = reconciler().present(spec())
    assert outcome.reasons == ["objects of the release were deleted"] and helm.calls == ["upgrade", "upgrade"]


def test_failed_upgrade_rolls_back_after_collecting_diagnostics(rig):
    helm, cluster, reconciler = rig
    reconciler().present(spec())
    helm.fail_upgrade = True
    with pytest.raises(ReleaseFailed) as failure:
        reconciler().present(spec(image="repo/agent:does-not-exist"))
    message = str(failure.value)
    assert "Rolled back to revision 1" in message and "ImagePullBackOff" in message and "bosun-agent-1" in message
    assert helm.calls == ["upgrade", "upgrade", "rollback 1"]
    assert failure.value.diagnostics["pods"][0]["containers"][0]["reason"] == "ImagePullBackOff"
    assert failure.value.status["revision"] == 3


def test_failed_first_install_is_uninstalled(rig):
    helm, cluster, reconciler = rig
    helm.fail_upgrade = True
    with pytest.raises(ReleaseFailed, match="uninstalled"):
        reconciler().present(spec())
    assert helm.calls == ["upgrade", "uninstall"] and helm.revisions == []


def test_pending_release_is_left_alone_with_the_fix(rig):
    helm, cluster, reconciler = rig
    reconciler().present(spec())
    helm.revisions.append({"revision": 2, "status": "pending-upgrade", "chart": "agent-1.0.0", "values": {},
                           "manifest": MANIFEST})
    with pytest.raises(ReleaseBusy, match=r"Another operation is in progress on release bosun .*pending-upgrade.*"
                                          r"helm rollback bosun 1 -n ns"):
        reconciler().present(spec())
    assert helm.calls == ["upgrade"]


def test_absent(rig):
    helm, cluster, reconciler = rig
    assert reconciler().absent(spec(), True, 10).changed is False
    reconciler().present(spec())
    checked = reconciler(check_mode=True).absent(spec(), True, 10)
    assert checked.changed and helm.revisions
    assert reconciler().absent(spec(), True, 10).changed and helm.revisions == []


# ---------------------------------------------------------------- giving up on a hopeless rollout early


class FakeRunning:
    """A helm upgrade in the background: finishes after `polls` polls, or when stopped (SIGTERM: cancelled)."""

    def __init__(self, polls: int | None = None) -> None:
        self.polls, self.limit, self.stopped = 0, polls, False

    def poll(self):
        self.polls += 1
        if self.stopped:
            return 1
        return 0 if self.limit is not None and self.polls > self.limit else None

    def stop(self):
        self.stopped = True

    def result(self):
        return (1, "", "Release bosun has been cancelled.\nError: UPGRADE FAILED: context canceled") if self.stopped \
            else (0, "", "")


def background_helm(running: FakeRunning) -> Helm:
    return Helm("helm", run=lambda argv: (0, "", ""), spawn=lambda argv, stdin: running)


def upgrade_with(helm: Helm, watch) -> None:
    helm.upgrade("bosun", "ns", ChartSource("/charts/agent"), "/tmp/values.json", wait=True, timeout=300,
                 create_namespace=False, description="d", watch=watch, poll=0, sleep=lambda _: None)


def test_helm_is_cancelled_once_the_watch_finds_the_rollout_hopeless():
    running = FakeRunning()
    answers = iter([None, None, "pod bosun-agent-1 container agent has been in ImagePullBackOff for 61s"])
    with pytest.raises(StoppedWaiting, match="was stopped before its timeout: pod bosun-agent-1 container agent "
                                             "has been in ImagePullBackOff for 61s"):
        upgrade_with(background_helm(running), lambda: next(answers))
    assert running.stopped and running.polls == 3


def test_helm_that_finishes_is_not_disturbed():
    running = FakeRunning(polls=2)
    upgrade_with(background_helm(running), lambda: None)
    assert not running.stopped


def _stuck_pod(reason: str, deleting: bool = False) -> dict:
    pod = _pod("bosun-agent-1", False, {"waiting": {"reason": reason, "message": "m"}})
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    return pod


@pytest.mark.parametrize("reasons, stuck", [
    (["ImagePullBackOff"] * 4, True),
    (["ErrImagePull", "ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"], True),  # one wait, two names
    (["CrashLoopBackOff"] * 4, True),
    (["ContainerCreating"] * 4, False),  # slow, not stuck
    (["ImagePullBackOff", "ImagePullBackOff", None, "ImagePullBackOff"], False),  # it got going in between
])
def test_a_container_is_stuck_only_when_waiting_for_a_hopeless_reason_without_pause(tmp_path, reasons, stuck):
    cluster = FakeCluster()
    cluster.apply(parse_manifest(MANIFEST.replace("IMAGE", "repo/agent:does-not-exist")), ready=False)
    now = [0.0]
    reconciler = Reconciler(FakeHelm(cluster, MANIFEST), cluster, Masker(), lambda values: "", clock=lambda: now[0])
    check = reconciler.stuck_watch(parse_manifest(MANIFEST), "ns", patience=30)
    found = None
    for reason in reasons:
        cluster.pod_list = [_stuck_pod(reason)] if reason else [_pod("bosun-agent-1", True, {"running": {}})]
        found = check()
        now[0] += 15
    assert bool(found) is stuck, found
    if stuck:
        assert found.startswith("pod bosun-agent-1 container agent") and "for 45s" in found


def test_pods_of_the_old_replicaset_being_deleted_do_not_count(tmp_path):
    cluster = FakeCluster()
    cluster.apply(parse_manifest(MANIFEST.replace("IMAGE", "repo/agent:1.0")), ready=True)
    now = [0.0]
    reconciler = Reconciler(FakeHelm(cluster, MANIFEST), cluster, Masker(), lambda values: "", clock=lambda: now[0])
    check = reconciler.stuck_watch(parse_manifest(MANIFEST), "ns", patience=1)
    cluster.pod_list = [_stuck_pod("CrashLoopBackOff", deleting=True)]
    assert check() is None
    now[0] += 10
    assert check() is None


def test_a_stopped_upgrade_is_rolled_back_with_its_diagnostics(rig):
    helm, cluster, reconciler = rig
    reconciler().present(spec())

    def stopped_upgrade(name, namespace, chart, values_file, **options):
        assert options["watch"] is not None  # spec(stuck_timeout) reached helm
        helm.fail_upgrade = True
        try:
            FakeHelm.upgrade(helm, name, namespace, chart, values_file)
        except HelmError as exc:
            raise StoppedWaiting("helm upgrade --install bosun was stopped before its timeout: pod bosun-agent-1 "
                                 "container agent has been in ImagePullBackOff for 60s", str(exc)) from exc

    helm.upgrade = stopped_upgrade
    stuck_spec = spec(image="repo/agent:does-not-exist")
    stuck_spec.stuck_timeout = 60
    with pytest.raises(ReleaseFailed) as failure:
        reconciler().present(stuck_spec)
    assert "stopped before its timeout" in str(failure.value) and "Rolled back to revision 1" in str(failure.value)


def test_helm_is_stopped_when_watching_fails():
    running = FakeRunning()

    def broken_watch():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        upgrade_with(background_helm(running), broken_watch)
    assert running.stopped  # not left writing the release on its own


class FlakyCluster(FakeCluster):
    """A cluster whose API server does not answer the first `outages` reads."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages

    def get(self, api_version, kind, namespace, name):
        if self.outages:
            self.outages -= 1
            raise ApiUnavailable("Cannot reach the API server at https://127.0.0.1:6443 while reading Deployment")
        return super().get(api_version, kind, namespace, name)


def test_a_briefly_absent_api_server_is_waited_for(tmp_path):
    cluster = FlakyCluster(outages=3)
    cluster.apply(parse_manifest(MANIFEST.replace("IMAGE", "repo/agent:1.0")), ready=True)
    now = [0.0]
    reconciler = Reconciler(FakeHelm(cluster, MANIFEST), cluster, Masker(), lambda values: "", clock=lambda: now[0],
                            sleep=lambda seconds: now.__setitem__(0, now[0] + 2))
    assert reconciler.wait_available(parse_manifest(MANIFEST), "ns", deadline=60) == []
    assert reconciler.stuck_watch(parse_manifest(MANIFEST), "ns", 1)() is None
    cluster.outages = 1000
    with pytest.raises(ApiUnavailable):
        reconciler.wait_available(parse_manifest(MANIFEST), "ns", deadline=now[0] + 10)
    assert reconciler.stuck_watch(parse_manifest(MANIFEST), "ns", 1)() is None  # no verdict while it is away


# ---------------------------------------------------------------- a failure whose explanation cannot be read


class BlindCluster(FakeCluster):
    """A cluster on which some reads fail once `blind` is set: `events` (a 403 listing events), `pods`, or
    `everything` (an API server that stays away)."""

    def __init__(self) -> None:
        super().__init__()
        self.blind: str | None = None

    def get(self, api_version, kind, namespace, name):
        if self.blind == "everything":
            raise ApiUnavailable("Cannot reach the API server at https://127.0.0.1:6443 while reading Deployment")
        return super().get(api_version, kind, namespace, name)

    def pods(self, namespace, selector):
        if self.blind == "pods":
            raise ApiUnavailable("Cannot reach the API server at https://127.0.0.1:6443 while reading pods")
        return super().pods(namespace, selector)

    def warning_events(self, namespace):
        if self.blind == "events":
            raise KubernetesAccessError(f"Reading events in {namespace} from https://k8s failed: the API server "
                                        "forbids it: grant the user read access, or run as a cluster administrator.")
        return super().warning_events(namespace)


@pytest.fixture
def blind_rig(tmp_path):
    """The rig on a BlindCluster, with a clock that moves only when the reconciler sleeps."""
    cluster = BlindCluster()
    helm = FakeHelm(cluster, MANIFEST)
    now = [0.0]
    counter = iter(range(1000))

    def write_values(values):
        path = tmp_path / f"values-{next(counter)}.json"
        path.write_text(json.dumps(values))
        return str(path)

    def reconciler():
        return Reconciler(helm, cluster, Masker(), write_values, poll=1, clock=lambda: now[0],
                          sleep=lambda seconds: now.__setitem__(0, now[0] + max(seconds, 1)))

    return helm, cluster, reconciler


@pytest.mark.parametrize("blind, why", [("events", "the API server forbids it"),
                                        ("pods", "Cannot reach the API server")])
def test_a_failed_upgrade_is_rolled_back_even_when_its_diagnostics_cannot_be_read(blind_rig, blind, why):
    helm, cluster, reconciler = blind_rig
    reconciler().present(spec())
    helm.fail_upgrade, cluster.blind = True, blind
    with pytest.raises(ReleaseFailed) as failure:
        reconciler().present(spec(image="repo/agent:does-not-exist"))
    message = str(failure.value)
    assert helm.calls == ["upgrade", "upgrade", "rollback 1"]
    assert failure.value.changed is True and failure.value.status["revision"] == 3
    assert message.startswith("Upgrading release bosun in namespace ns to chart agent-1.0.0 failed: ")
    assert "UPGRADE FAILED" in message and "Rolled back to revision 1" in message
    assert "could not be read" in message and why in message
    assert "t0k3n-abcdef" not in message


def test_a_failed_first_install_is_uninstalled_even_when_its_diagnostics_cannot_be_read(blind_rig):
    helm, cluster, reconciler = blind_rig
    helm.fail_upgrade, cluster.blind = True, "events"
    with pytest.raises(ReleaseFailed, match="uninstalled") as failure:
        reconciler().present(spec())
    assert helm.calls == ["upgrade", "uninstall"] and helm.revisions == []
    assert failure.value.changed is True and "could not be read" in str(failure.value)


def test_an_api_server_that_stays_away_after_the_upgrade_fails_it_and_rolls_it_back(blind_rig):
    helm, cluster, reconciler = blind_rig
    reconciler().present(spec())
    helm.on_upgrade = lambda: setattr(cluster, "blind", "everything")  # helm wrote; then the API server went away
    away = spec(replicas=2)
    away.wait_timeout = 30
    with pytest.raises(ReleaseFailed) as failure:
        reconciler().present(away)
    message = str(failure.value)
    assert helm.calls == ["upgrade", "upgrade", "rollback 1"]
    assert failure.value.changed is True
    assert message.startswith("Upgrading release bosun in namespace ns to chart agent-1.0.0 failed: ")
    assert "Cannot reach the API server" in message and "Rolled back to revision 1" in message


def test_a_repair_that_does_not_become_available_fails_changed_even_when_its_diagnostics_cannot_be_read(blind_rig):
    helm, cluster, reconciler = blind_rig
    reconciler().present(spec())
    live = cluster.objects[("Deployment", "bosun-agent")]
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    live["status"]["availableReplicas"] = 0
    cluster.blind = "events"
    with pytest.raises(ReleaseFailed) as failure:
        reconciler().present(spec())
    assert cluster.patches and failure.value.changed is True
    assert failure.value.drift and "could not be read" in str(failure.value)
    assert str(failure.value).startswith("Repairing drift of release bosun failed: ")


def test_a_history_that_cannot_be_read_after_a_failed_upgrade_says_how_to_recover(blind_rig):
    helm, cluster, reconciler = blind_rig
    reconciler().present(spec())
    helm.fail_upgrade = True
    real_history = helm.history

    def history_then_away(name, namespace):
        if "upgrade" in helm.calls[1:]:
            raise HelmError("Error: Kubernetes cluster unreachable: the server has asked for the client to provide "
                            "credentials")
        return real_history(name, namespace)

    helm.history = history_then_away
    with pytest.raises(ReleaseFailed) as failure:
        reconciler().present(spec(image="repo/agent:does-not-exist"))
    message = str(failure.value)
    assert helm.calls == ["upgrade", "upgrade"]  # not knowing what helm left, nothing is rolled back blindly
    assert failure.value.changed is True
    assert "UPGRADE FAILED" in message and "cluster unreachable" in message
    assert "helm history bosun -n ns" in message and "helm rollback bosun 1 -n ns" in message


def test_a_rollback_that_cannot_be_recorded_still_reports_the_failed_upgrade(blind_rig, monkeypatch):
    helm, cluster, reconciler = blind_rig
    reconciler().present(spec())
    helm.fail_upgrade = True
    intend = ReleaseGuard.intend

    def intend_but_not_rollbacks(self, revision, operation, rollback_to=None):
        if operation == "rollback":
            raise KubernetesAccessError("Cannot reach the API server at https://127.0.0.1:6443 while writing Lease")
        return intend(self, revision, operation, rollback_to)

    monkeypatch.setattr(ReleaseGuard, "intend", intend_but_not_rollbacks)
    with pytest.raises(ReleaseFailed) as failure:
        reconciler().present(spec(image="repo/agent:does-not-exist"))
    message = str(failure.value)
    assert failure.value.changed is True and "UPGRADE FAILED" in message
    assert "Recovering failed as well (Cannot reach the API server" in message
    assert "helm rollback bosun 1 -n ns" in message
