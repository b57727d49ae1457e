# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Whether the agent's Deployments rolled out, and if not, why: readiness as pure functions, one watcher.

The functions judge one object as `kubectl rollout status` does and explain a pod that is not ready;
RolloutWatcher polls the cluster with them. What it finds is collected before a failed release is rolled
back, because the rollback replaces the very pods that show the cause.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import ApiUnavailable
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_cluster import label_selector
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_manifest import (
    ObjectRef,
    object_ref,
)

# Waiting reasons that do not go away by waiting longer (a wrong image, a missing Secret, a crashing agent).
STUCK_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
                 "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff")


class RolloutCluster(Protocol):
    """What watching a rollout reads from the cluster."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        ...

    def warning_events(self, namespace: str) -> list[dict[str, Any]]:
        ...


def rollout_state(deployment: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """(available, hopeless, why) for one Deployment, the way `kubectl rollout status` judges it."""
    name = (deployment.get("metadata") or {}).get("name")
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return False, True, f"Deployment {name} exceeded its progress deadline: {progressing.get('message', '')}"
    if (status.get("observedGeneration") or 0) < generation:
        return False, False, f"Deployment {name}: the controller has not acted on the latest spec yet"
    wanted = spec.get("replicas", 1)
    updated, total = status.get("updatedReplicas") or 0, status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < wanted:
        return False, False, f"Deployment {name}: {updated} of {wanted} replicas updated"
    if available < updated:
        return False, False, f"Deployment {name}: {available} of {updated} updated replicas available"
    if total > updated:
        return False, False, f"Deployment {name}: {total - updated} old replicas are still terminating"
    if wanted and (conditions.get("Available") or {}).get("status") != "True":
        return False, False, f"Deployment {name} is not Available yet"
    return True, False, f"Deployment {name} is available ({available}/{wanted})"


def _container_problems(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    problems = []
    for kind, statuses in (("init container", status.get("initContainerStatuses") or []),
                           ("container", status.get("containerStatuses") or [])):
        for container in statuses:
            if container.get("ready"):
                continue
            state = container.get("state") or {}
            last = (container.get("lastState") or {}).get("terminated") or {}
            problem: dict[str, Any] = {"container": container.get("name"), "kind": kind,
                                       "image": container.get("image"),
                                       "restarts": container.get("restartCount", 0)}
            if "waiting" in state:
                problem.update(state="waiting", reason=state["waiting"].get("reason", ""),
                               message=state["waiting"].get("message", ""))
            elif "terminated" in state:
                terminated = state["terminated"]
                if kind == "init container" and terminated.get("exitCode") == 0:
                    continue
                problem.update(state="terminated", reason=terminated.get("reason", ""),
                               message=terminated.get("message", ""), exit_code=terminated.get("exitCode"))
            else:
                problem.update(state="running", reason="NotReady", message="running but not ready")
            if last:
                problem["last_termination"] = {"reason": last.get("reason", ""), "exit_code": last.get("exitCode")}
            problems.append(problem)
    return problems


def pod_problems(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """Why one pod is not ready, or None if it is."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return None
    found: dict[str, Any] = {"pod": (pod.get("metadata") or {}).get("name"), "phase": status.get("phase", ""),
                             "node": (pod.get("spec") or {}).get("nodeName") or "",
                             "containers": _container_problems(pod)}
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        found["unschedulable"] = f"{scheduled.get('reason', '')}: {scheduled.get('message', '')}".strip(": ")
    return found


def _event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or
               (event.get("metadata") or {}).get("creationTimestamp") or "")


def related_events(events: Iterable[Mapping[str, Any]], names: Iterable[str], prefixes: Iterable[str],
                   limit: int = 10) -> list[dict[str, Any]]:
    """The latest Warning events about the given objects (a Deployment's ReplicaSets and pods share its prefix)."""
    names, prefixes = set(names), tuple(prefixes)
    picked = []
    for event in events:
        involved = event.get("involvedObject") or {}
        name = str(involved.get("name", ""))
        if event.get("type", "Warning") != "Warning" or not (name in names or (prefixes and name.startswith(prefixes))):
            continue
        picked.append({"object": f"{involved.get('kind')}/{name}", "reason": event.get("reason", ""),
                       "message": str(event.get("message", "")).strip(), "count": event.get("count") or 1,
                       "last_seen": _event_time(event)})
    picked.sort(key=lambda event: event["last_seen"])
    return picked[-limit:]


def format_diagnostics(diagnostics: Mapping[str, Any]) -> str:
    """The readable form of what collect_diagnostics found, one fact a line."""
    lines = []
    for deployment in diagnostics.get("deployments", []):
        lines.append(f"{deployment['state']}")
        for condition in deployment.get("conditions", []):
            lines.append(f"  condition {condition}")
    for pod in diagnostics.get("pods", []):
        where = f"{pod['phase'] or 'unknown phase'}" + (f" on {pod['node']}" if pod.get("node") else "")
        lines.append(f"Pod {pod['pod']} ({where}) is not ready:")
        if pod.get("unschedulable"):
            lines.append(f"  not scheduled: {pod['unschedulable']}")
        for container in pod.get("containers", []):
            detail = container.get("reason") or container.get("state")
            if container.get("message"):
                detail += f": {container['message']}"
            if container.get("exit_code") is not None:
                detail += f" (exit code {container['exit_code']})"
            last = container.get("last_termination")
            if last:
                detail += f"; last exit: {last.get('reason')} (code {last.get('exit_code')})"
            restarts = f", {container['restarts']} restarts" if container.get("restarts") else ""
            lines.append(f"  {container['kind']} {container['container']} ({container.get('image')}) "
                         f"{container['state']}{restarts}: {detail}")
    if diagnostics.get("events"):
        lines.append("Recent Warning events:")
        for event in diagnostics["events"]:
            count = f" (x{event['count']})" if event.get("count", 1) > 1 else ""
            lines.append(f"  {event['last_seen']} {event['object']}: {event['reason']}: {event['message']}{count}")
    return "\n".join(lines)


def deployments(documents: Sequence[Mapping[str, Any]], namespace: str) -> list[ObjectRef]:
    """The manifest's Deployments: the agent's workloads whose rollout decides success."""
    return [object_ref(document, namespace) for document in documents if document.get("kind") == "Deployment"]


def deployment_conditions(deployment: Mapping[str, Any]) -> list[str]:
    """The conditions that explain a Deployment that is not available, one line each."""
    return [f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".strip()
            for c in (deployment.get("status") or {}).get("conditions") or []
            if c.get("status") != "True" or c.get("reason") == "ProgressDeadlineExceeded"]


class RolloutWatcher:
    """Polls the Deployments of a manifest: until available, until stuck, or for what explains a failure."""

    def __init__(self, cluster: RolloutCluster, *, poll: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cluster, self.poll, self.clock, self.sleep = cluster, poll, clock, sleep

    def _live(self, ref: ObjectRef) -> dict[str, Any] | None:
        return self.cluster.get("apps/v1", "Deployment", ref.namespace, ref.name)

    def _pods(self, ref: ObjectRef, live: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """The Deployment's pods that are not being deleted (the old ReplicaSet's are on their way out)."""
        selector = label_selector(((live or {}).get("spec") or {}).get("selector"))
        pods = self.cluster.pods(ref.namespace, selector) if selector else []
        return [pod for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp")]

    def not_available(self, documents: Sequence[Mapping[str, Any]], namespace: str) -> tuple[list[str], bool]:
        """Why each Deployment is not available yet, and whether waiting longer cannot help."""
        waiting, hopeless = [], False
        for ref in deployments(documents, namespace):
            live = self._live(ref)
            if live is None:
                waiting.append(f"Deployment {ref.name} does not exist")
                continue
            available, stuck, why = rollout_state(live)
            if not available:
                waiting.append(why)
                hopeless = hopeless or stuck
        return waiting, hopeless

    def wait_available(self, documents: Sequence[Mapping[str, Any]], namespace: str, deadline: float) -> list[str]:
        """Poll until every Deployment of the manifest is available; what is still missing at the deadline.

        An API server that is briefly away (restarting, overloaded) is waited for too, up to the same deadline.
        """
        while True:
            try:
                waiting, hopeless = self.not_available(documents, namespace)
            except ApiUnavailable:
                if self.clock() >= deadline:
                    raise
                waiting, hopeless = ["the API server is not answering"], False
            if not waiting or hopeless or self.clock() >= deadline:
                return waiting
            self.sleep(min(self.poll, max(0.0, deadline - self.clock())))

    def stuck_watch(self, documents: Sequence[Mapping[str, Any]], namespace: str,
                    patience: float) -> Callable[[], str | None]:
        """A check to call while the rollout runs: says so once a container has been stuck for `patience` seconds.

        Stuck means waiting for one of STUCK_REASONS, continuously (ErrImagePull and ImagePullBackOff alternate:
        both count as the same wait); pods being deleted (the old ReplicaSet's) do not count.
        """
        since: dict[tuple[str, str], float] = {}

        def check() -> str | None:
            try:
                return self._longest_stuck(documents, namespace, patience, since)
            except ApiUnavailable:
                return None  # no verdict while the API server is away: helm's own wait goes on

        return check

    def _longest_stuck(self, documents: Sequence[Mapping[str, Any]], namespace: str, patience: float,
                       since: dict[tuple[str, str], float]) -> str | None:
        """One look for stuck_watch; `since` remembers when each stuck container was first seen stuck."""
        now, seen = self.clock(), set()
        worst: tuple[float, str] | None = None
        for ref in deployments(documents, namespace):
            for pod in self._pods(ref, self._live(ref)):
                for problem in _container_problems(pod):
                    if problem.get("state") != "waiting" or problem.get("reason") not in STUCK_REASONS:
                        continue
                    key = ((pod.get("metadata") or {}).get("name", ""), str(problem["container"]))
                    seen.add(key)
                    stuck_for = now - since.setdefault(key, now)
                    if stuck_for >= patience and (worst is None or stuck_for > worst[0]):
                        worst = (stuck_for, f"pod {key[0]} container {key[1]} ({problem.get('image')}) has been "
                                            f"in {problem['reason']} for {stuck_for:.0f}s")
        for key in set(since) - seen:
            del since[key]
        return worst[1] if worst else None

    def diagnostics(self, documents: Sequence[Mapping[str, Any]], namespace: str) -> dict[str, Any]:
        """The Deployments that are not available, their pods that are not ready, and the related Warning events."""
        found: dict[str, Any] = {"deployments": [], "pods": [], "events": []}
        names, prefixes = set(), []
        events_by_namespace: dict[str, list[dict[str, Any]]] = {}
        for ref in deployments(documents, namespace):
            live = self._live(ref)
            if live is None:
                found["deployments"].append({"name": ref.name, "state": f"Deployment {ref.name} does not exist"})
                continue
            available, _hopeless, why = rollout_state(live)
            if available:
                continue
            found["deployments"].append({"name": ref.name, "state": why, "conditions": deployment_conditions(live)})
            names.add(ref.name)
            prefixes.append(f"{ref.name}-")
            for problem in filter(None, map(pod_problems, self._pods(ref, live))):
                found["pods"].append(problem)
                names.add(problem["pod"])
            if ref.namespace not in events_by_namespace:
                events_by_namespace[ref.namespace] = self.cluster.warning_events(ref.namespace)
        for events in events_by_namespace.values():
            found["events"].extend(related_events(events, names, prefixes))
        return found
