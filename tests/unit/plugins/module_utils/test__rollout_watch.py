"""The rollout watcher on a fake cluster: available, stuck, and what explains a Deployment that is not."""

from __future__ import annotations

from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._rollout_watch import (
    RolloutWatcher,
    deployment_conditions,
    deployments,
)

MANIFEST = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "agent-config"}}]


def live_deployment(available: bool) -> dict[str, Any]:
    return {"metadata": {"name": "agent", "generation": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "agent"}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": int(available),
                       "conditions": [{"type": "Available", "status": str(available), "reason": "MinimumReplicas"}]}}


def pulling_pod(deleted: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "agent-5c7f-abcde"}
    if deleted:
        metadata["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    return {"metadata": metadata, "spec": {"nodeName": "node-1"},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [{"name": "agent", "image": "repo/agent:bad", "ready": False,
                                              "restartCount": 0,
                                              "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}


class Cluster:
    def __init__(self, available: bool, pods: list[dict[str, Any]]) -> None:
        self.deployment, self.pod_list = live_deployment(available), pods
        self.selectors: list[str] = []

    def get(self, api_version, kind, namespace, name):
        return self.deployment if (kind, name) == ("Deployment", "agent") else None

    def pods(self, namespace, selector):
        self.selectors.append(selector)
        return self.pod_list

    def warning_events(self, namespace):
        return [{"involvedObject": {"kind": "Pod", "name": "agent-5c7f-abcde"}, "reason": "Failed",
                 "message": "Back-off pulling image", "lastTimestamp": "2026-11-25T12:00:01Z"},
                {"involvedObject": {"kind": "Pod", "name": "other-1"}, "reason": "Failed", "message": "x"}]


def test_only_deployments_decide_the_rollout():
    assert [(ref.namespace, ref.name) for ref in deployments(MANIFEST, "ns")] == [("ns", "agent")]


def test_an_available_deployment_ends_the_wait_at_once():
    watcher = RolloutWatcher(Cluster(True, []), poll=0, clock=lambda: 0.0, sleep=lambda _: None)
    assert watcher.wait_available(MANIFEST, "ns", deadline=10) == []


def test_a_pod_stuck_pulling_is_reported_once_patience_runs_out_and_deleted_pods_do_not_count():
    now = [0.0]
    cluster = Cluster(False, [pulling_pod(), pulling_pod(deleted=True)])
    check = RolloutWatcher(cluster, clock=lambda: now[0]).stuck_watch(MANIFEST, "ns", patience=30)
    assert check() is None
    now[0] = 31.0
    assert check() == "pod agent-5c7f-abcde container agent (repo/agent:bad) has been in ImagePullBackOff for 31s"
    assert cluster.selectors[0] == "app=agent"


def test_diagnostics_name_the_deployment_its_pod_and_only_related_events():
    found = RolloutWatcher(Cluster(False, [pulling_pod(), pulling_pod(deleted=True)])).diagnostics(MANIFEST, "ns")
    assert [d["name"] for d in found["deployments"]] == ["agent"]
    assert [p["pod"] for p in found["pods"]] == ["agent-5c7f-abcde"]
    assert [e["object"] for e in found["events"]] == ["Pod/agent-5c7f-abcde"]
    assert deployment_conditions(live_deployment(False)) == ["Available=False MinimumReplicas:"]
