# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Reconcile one Helm release (the management agent's) with what the playbook asks for.

Decides from observed facts, never "always changed":

- install / upgrade / nothing: the chart (name-version), the values helm would store and the manifest
  helm would apply (rendered with `helm upgrade --dry-run`) against the deployed revision;
- drift: the live objects against the deployed manifest (workload images, replicas and env,
  ConfigMap and Secret data, deleted objects), repaired with a JSON patch, or by helm when an object
  is gone;
- failure: the agent Deployments are watched with the Kubernetes API; when they do not become
  available, the failing pods, their containers' waiting reasons and the recent Warning events are
  collected *before* the release is rolled back (or a failed first install removed), because the
  rollback replaces those pods;
- interruption: a run that changes the release holds its Lease (_release_lock) and records each
  revision before helm writes it, so a revision left pending by a run that died is recovered by the
  next run, and one written by anyone else is never touched.

Pure functions (values, masking, drift, diagnostics) are importable and testable without Ansible.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

try:
    import yaml
    HAS_YAML = True
except ImportError:
    HAS_YAML = False

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    ChartSource,
    Helm,
    HelmError,
    Rendered,
    Revision,
    StoppedWaiting,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import (
    ApiUnavailable,
    KubernetesAccessError,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_cluster import (
    UnknownKind,
    label_selector,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_lock import (
    LeaseStore,
    NamespaceMissing,
    ReleaseHeld,
    ReleaseLock,
)

MASK = "********"
PENDING = ("pending-install", "pending-upgrade", "pending-rollback", "uninstalling")
# What helm says when another client got to the release first (its status check and revision write race).
BUSY_ERRORS = re.compile(r"another operation \(install/upgrade/rollback\) is in progress|release: already exists|"
                         r"cannot re-use a name that is still in use", re.I)
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
# Waiting reasons that do not go away by waiting longer (a wrong image, a missing Secret, a crashing agent).
STUCK_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
                 "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff")
REMOVE = object()  # a drift repaired by removing the live field

# Keys whose values are secrets, and key endings that name a secret rather than hold one
# (`apiSecretName: mlops-api-key`, `secretKeyRef`, `tokenFile`).
SENSITIVE_KEY = re.compile(r"token|passw(or)?d|secret|api[-_]?key|private[-_]?key|credential|^auth$", re.I)
NAMES_A_SECRET = re.compile(r"(name|names|ref|file|path|dir|namespace|enabled|create|mount|url|uri|type|kind)$",
                            re.I)


class ReleaseBusy(Exception):
    """Another helm operation holds the release (a pending-* status)."""


class ReleaseFailed(Exception):
    """The release could not be brought to the desired state; carries what was found and done."""

    def __init__(self, message: str, *, changed: bool, diagnostics: dict[str, Any] | None = None,
                 status: dict[str, Any] | None = None, drift: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.changed, self.diagnostics = changed, diagnostics
        self.status, self.drift = status or {}, drift or []


class InvalidRequest(ValueError):
    """The arguments cannot work; the message says what to change."""


# ---------------------------------------------------------------- values


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge like helm merges several --values files: maps deeply, anything else replaced by the later one."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def compose_values(files: Sequence[Mapping[str, Any]], values: Mapping[str, Any] | None) -> dict[str, Any]:
    """values_files in order, then values on top: what the release should hold."""
    composed: dict[str, Any] = {}
    for layer in [*files, values or {}]:
        composed = merge_values(composed, layer)
    return composed


def canonical(value: Any) -> Any:
    """The JSON form helm stores, so 1 and 1.0, or tuples and lists, compare as helm sees them."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def values_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return canonical(a or {}) == canonical(b or {})


def load_values_file(path: str) -> dict[str, Any]:
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise InvalidRequest(f"Values file {path} does not exist (values_files): fix the path.")
    try:
        with open(expanded, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"Values file {path} cannot be read as YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidRequest(f"Values file {path} holds a {type(loaded).__name__}, not a mapping of chart values.")
    return loaded


def resolve_chart(ref: str, version: str | None = None, repo_url: str | None = None) -> ChartSource:
    """A local chart (directory or .tgz), a chart in a repository (repo/name, or name with repo_url), or oci://."""
    if repo_url or ref.startswith("oci://"):
        return ChartSource(ref, version, repo_url)
    expanded = os.path.expanduser(ref)
    if ref.startswith(("/", "./", "../", "~")) or ref.endswith((".tgz", ".tar.gz")) or os.path.exists(expanded):
        if not os.path.exists(expanded):
            raise InvalidRequest(f"Chart path {ref} does not exist: pass the chart directory or .tgz (e.g. the agent "
                                 "tarball's tools/charts/datarobot-management-agent), or repo/name with chart_version.")
        if os.path.isdir(expanded) and not os.path.isfile(os.path.join(expanded, "Chart.yaml")):
            raise InvalidRequest(f"Chart path {ref} is a directory without Chart.yaml: point chart_ref at the chart "
                                 "itself.")
        return ChartSource(os.path.abspath(expanded), version)
    if "/" not in ref:
        raise InvalidRequest(f"chart_ref {ref!r} is neither an existing path nor repo/name: pass a path, "
                             "repo/name (after `helm repo add`), oci://..., or the chart name with chart_repo_url.")
    return ChartSource(ref, version)


# ---------------------------------------------------------------- masking


def is_sensitive_key(key: str) -> bool:
    return bool(SENSITIVE_KEY.search(key)) and not NAMES_A_SECRET.search(key)


def _masked_scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, (bool, dict, list))


class Masker:
    """Finds secrets in values and manifests and masks them in everything the module returns."""

    def __init__(self, secret_paths: Iterable[str] = (), min_length: int = 4) -> None:
        self.paths = {path.strip(".") for path in secret_paths if path.strip(".")}
        self.min_length = min_length
        self.secrets: set[str] = set()

    def _is_secret_path(self, path: Sequence[str]) -> bool:
        dotted = ".".join(path)
        return (bool(path) and is_sensitive_key(path[-1])) or any(
            dotted == secret or dotted.startswith(secret + ".") for secret in self.paths)

    def _remember(self, value: Any) -> None:
        if isinstance(value, Mapping):
            for item in value.values():
                self._remember(item)
        elif isinstance(value, list):
            for item in value:
                self._remember(item)
        elif _masked_scalar(value):
            text = str(value)
            if len(text) >= self.min_length:
                self.secrets.add(text)

    def collect_values(self, values: Any, path: tuple[str, ...] = ()) -> None:
        if isinstance(values, Mapping):
            for key, item in values.items():
                here = (*path, str(key))
                if self._is_secret_path(here):
                    self._remember(item)
                else:
                    self.collect_values(item, here)
        elif isinstance(values, list):
            for item in values:
                self.collect_values(item, path)

    def collect_manifest(self, documents: Iterable[Mapping[str, Any]]) -> None:
        for document in documents:
            if document.get("kind") == "Secret":
                for item in (document.get("data") or {}).values():
                    self._remember(item)
                    decoded = _b64decode(item)
                    if decoded is not None:
                        self._remember(decoded)
                self._remember(document.get("stringData") or {})
            self._collect_env(document)

    def _collect_env(self, node: Any) -> None:
        if isinstance(node, Mapping):
            if is_sensitive_key(str(node.get("name", ""))) and "value" in node and len(node) <= 3:
                self._remember(node.get("value"))
            for item in node.values():
                self._collect_env(item)
        elif isinstance(node, list):
            for item in node:
                self._collect_env(item)

    def text(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def values(self, values: Any, path: tuple[str, ...] = ()) -> Any:
        """A copy with every secret value replaced by ********."""
        if isinstance(values, Mapping):
            masked = {}
            for key, item in values.items():
                here = (*path, str(key))
                masked[key] = self._mask_all(item) if self._is_secret_path(here) else self.values(item, here)
            return masked
        if isinstance(values, list):
            return [self.values(item, path) for item in values]
        return self.text(values) if isinstance(values, str) else values

    def _mask_all(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: self._mask_all(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._mask_all(item) for item in value]
        return MASK if _masked_scalar(value) else value

    def manifest_object(self, document: Mapping[str, Any]) -> Any:
        """A manifest object fit to show: Secret data, sensitive keys and env values masked."""
        masked = copy.deepcopy(dict(document))
        if masked.get("kind") == "Secret":
            for section in ("data", "stringData"):
                if isinstance(masked.get(section), Mapping):
                    masked[section] = {key: MASK for key in masked[section]}
        return self._mask_tree(masked)

    def _mask_tree(self, node: Any) -> Any:
        if isinstance(node, Mapping):
            env_like = "value" in node and is_sensitive_key(str(node.get("name", ""))) and len(node) <= 3
            out = {}
            for key, item in node.items():
                if (env_like and key == "value") or (is_sensitive_key(str(key)) and _masked_scalar(item)):
                    out[key] = MASK if _masked_scalar(item) else item
                else:
                    out[key] = self._mask_tree(item)
            return out
        if isinstance(node, list):
            return [self._mask_tree(item) for item in node]
        return self.text(node) if isinstance(node, str) else node


def _b64decode(value: Any) -> str | None:
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------- manifests


def parse_manifest(text: str) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    return [document for document in yaml.safe_load_all(text) if isinstance(document, dict) and document]


def object_ref(document: Mapping[str, Any], namespace: str) -> tuple[str, str, str, str]:
    metadata = document.get("metadata") or {}
    return (str(document.get("apiVersion", "")), str(document.get("kind", "")),
            str(metadata.get("namespace") or namespace), str(metadata.get("name", "")))


def object_label(document: Mapping[str, Any]) -> str:
    return f"{document.get('kind')}/{(document.get('metadata') or {}).get('name')}"


def manifests_equal(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], namespace: str) -> bool:
    def keyed(documents: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], Any]:
        return {object_ref(document, namespace): canonical(document) for document in documents}

    return keyed(a) == keyed(b)


def dump_documents(documents: Sequence[Mapping[str, Any]]) -> str:
    ordered = sorted(documents, key=lambda document: (str(document.get("kind")), object_label(document)))
    return "".join("---\n" + yaml.safe_dump(document, sort_keys=True, default_flow_style=False)
                   for document in ordered)


# ---------------------------------------------------------------- drift


@dataclass
class Drift:
    ref: tuple[str, str, str, str]          # apiVersion, kind, namespace, name
    field: str                              # readable, e.g. spec.template.spec.containers[agent].image
    live: Any
    desired: Any
    path: str | None = None                 # JSON pointer to repair; None: the object is gone, helm recreates it
    value: Any = None                       # what to write at path (REMOVE to delete it)
    sensitive: bool = False

    @property
    def object(self) -> str:
        return f"{self.ref[1]}/{self.ref[3]}"

    def public(self, masker: Masker) -> dict[str, Any]:
        def show(value: Any) -> Any:
            if self.sensitive and _masked_scalar(value) and value != "(absent)":
                return MASK
            return masker.values(value) if isinstance(value, (dict, list)) else (
                masker.text(value) if isinstance(value, str) else value)

        return {"object": self.object, "field": self.field, "live": show(self.live), "desired": show(self.desired)}


ABSENT = "(absent)"


def _subset(desired: Any, live: Any) -> bool:
    """Every field the manifest sets has that value live (the API server adds defaults)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(_subset(value, live.get(key)) for key, value in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(
            _subset(d, l) for d, l in zip(desired, live))
    if isinstance(desired, (int, float)) and not isinstance(desired, bool) and isinstance(live, str):
        return str(desired) == live
    return canonical(desired) == canonical(live)


def _env_map(env: Any) -> dict[str, dict[str, Any]]:
    entries = {}
    for entry in env or []:
        if isinstance(entry, Mapping) and "name" in entry:
            normalized = {key: value for key, value in entry.items() if key != "name"}
            if normalized.get("value") in (None, ""):
                normalized.pop("value", None)  # the API server drops an empty value
            elif "value" in normalized:
                normalized["value"] = str(normalized["value"])
            entries[str(entry["name"])] = normalized
    return entries


def _env_shown(entry: Mapping[str, Any] | None) -> Any:
    if entry is None:
        return ABSENT
    if "valueFrom" in entry:
        return {"valueFrom": entry["valueFrom"]}
    return entry.get("value", "")


def _workload_drift(ref: tuple[str, str, str, str], desired: Mapping[str, Any],
                    live: Mapping[str, Any]) -> list[Drift]:
    found: list[Drift] = []
    want_spec, have_spec = desired.get("spec") or {}, live.get("spec") or {}
    if ref[1] != "DaemonSet" and "replicas" in want_spec:
        want = want_spec.get("replicas")
        want = 1 if want is None else want
        if have_spec.get("replicas") != want:
            found.append(Drift(ref, "spec.replicas", have_spec.get("replicas"), want, "/spec/replicas", want))
    want_pod = ((want_spec.get("template") or {}).get("spec")) or {}
    have_pod = ((have_spec.get("template") or {}).get("spec")) or {}
    for section in ("initContainers", "containers"):
        wanted = [c for c in want_pod.get(section) or [] if isinstance(c, Mapping)]
        have = have_pod.get(section) or []
        index = {container.get("name"): i for i, container in enumerate(have)}
        for container in wanted:
            name = container.get("name")
            where = f"spec.template.spec.{section}[{name}]"
            if name not in index:
                found.append(Drift(ref, where, ABSENT, "present", f"/spec/template/spec/{section}",
                                   [dict(c) for c in wanted]))
                continue
            live_container = have[index[name]]
            pointer = f"/spec/template/spec/{section}/{index[name]}"
            if str(container.get("image")) != str(live_container.get("image")):
                found.append(Drift(ref, f"{where}.image", live_container.get("image"), container.get("image"),
                                   f"{pointer}/image", container.get("image")))
            want_env, have_env = _env_map(container.get("env")), _env_map(live_container.get("env"))
            env_value = list(container.get("env") or []) or REMOVE
            for env_name in sorted(set(want_env) | set(have_env)):
                want_entry, have_entry = want_env.get(env_name), have_env.get(env_name)
                if want_entry is not None and have_entry is not None and _subset(want_entry, have_entry):
                    continue
                found.append(Drift(ref, f"{where}.env[{env_name}]", _env_shown(have_entry), _env_shown(want_entry),
                                   f"{pointer}/env", env_value, sensitive=is_sensitive_key(env_name)))
    return found


def _data_drift(ref: tuple[str, str, str, str], section: str, want: Mapping[str, Any], have: Mapping[str, Any],
                sensitive: bool) -> list[Drift]:
    found = []
    value = dict(want) if want else REMOVE
    for key in sorted(set(want) | set(have)):
        if key in want and key in have and str(want[key]) == str(have[key]):
            continue
        found.append(Drift(ref, f"{section}[{key}]", have.get(key, ABSENT), want.get(key, ABSENT), f"/{section}",
                           value, sensitive=sensitive or is_sensitive_key(key)))
    return found


def _secret_data(document: Mapping[str, Any]) -> dict[str, str]:
    data = {key: str(value) for key, value in (document.get("data") or {}).items()}
    for key, value in (document.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode("utf-8")).decode("ascii")
    return data


def drift_of(ref: tuple[str, str, str, str], desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[Drift]:
    """How one live object differs from its manifest, in the fields the agent depends on."""
    if live is None:
        return [Drift(ref, "(object)", ABSENT, "present")]
    kind = ref[1]
    if kind in WORKLOADS:
        return _workload_drift(ref, desired, live)
    if kind == "ConfigMap":
        return (_data_drift(ref, "data", desired.get("data") or {}, live.get("data") or {}, False)
                + _data_drift(ref, "binaryData", desired.get("binaryData") or {}, live.get("binaryData") or {},
                              False))
    if kind == "Secret":
        return _data_drift(ref, "data", _secret_data(desired), live.get("data") or {}, True)
    return []


def repair_operations(drift: Sequence[Drift], resource_version: str | None) -> list[dict[str, Any]]:
    """One JSON patch for one object's drift; refuses to apply if the object changed since it was read."""
    operations: list[dict[str, Any]] = []
    if resource_version:
        operations.append({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})
    seen = set()
    for item in drift:
        if item.path is None or item.path in seen:
            continue
        seen.add(item.path)
        if item.value is REMOVE:
            operations.append({"op": "remove", "path": item.path})
        else:
            operations.append({"op": "add", "path": item.path, "value": item.value})  # add replaces a member
    return operations


# ---------------------------------------------------------------- availability and diagnostics


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


# ---------------------------------------------------------------- the reconciler


class Cluster(Protocol):
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...

    def patch(self, api_version: str, kind: str, namespace: str, name: str,
              operations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        ...

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        ...

    def warning_events(self, namespace: str) -> list[dict[str, Any]]:
        ...


@dataclass
class ReleaseSpec:
    name: str
    namespace: str
    chart: ChartSource
    values: dict[str, Any]
    wait: bool = True
    wait_timeout: int = 300
    atomic: bool = True
    create_namespace: bool = False
    stuck_timeout: int = 0  # seconds a container may stay in a STUCK_REASONS state before waiting stops; 0: never


@dataclass
class Outcome:
    changed: bool
    action: str                                  # none | install | upgrade | repair | uninstall
    reasons: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)
    diff: list[dict[str, str]] = field(default_factory=list)


def describe(name: str, namespace: str, revision: Revision | None) -> dict[str, Any]:
    if revision is None:
        return {}
    return {"name": name, "namespace": namespace, "revision": revision.revision, "chart": revision.chart,
            "app_version": revision.app_version, "status": revision.status, "updated": revision.updated,
            "description": revision.description}


def revision_time(updated: str) -> datetime.datetime | None:
    """helm's `updated` (RFC 3339 with up to nanoseconds) as a UTC datetime."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", updated or "")
    if not match:
        return None
    moment = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        microsecond=int((match.group(2) or "0")[:6].ljust(6, "0")))
    zone = match.group(3) or "Z"
    offset = datetime.timedelta(0) if zone == "Z" else (
        (1 if zone[0] == "+" else -1) * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return moment.replace(tzinfo=datetime.timezone(offset)).astimezone(datetime.timezone.utc)


def lease_seconds(wait_timeout: int) -> int:
    """How long a run may hold the release: an upgrade, the wait for the agent and a rollback, with margin."""
    return 3 * wait_timeout + 120


def _yaml(value: Any) -> str:
    return yaml.safe_dump(canonical(value), sort_keys=True, default_flow_style=False) if value else ""


class Reconciler:
    def __init__(self, helm: Helm, cluster: Cluster, masker: Masker, write_values: Callable[[dict[str, Any]], str],
                 *, check_mode: bool = False, poll: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, leases: LeaseStore | None = None,
                 lock_identity: str | None = None) -> None:
        self.helm, self.cluster, self.masker = helm, cluster, masker
        self.write_values, self.check_mode = write_values, check_mode
        self.poll, self.clock, self.sleep = poll, clock, sleep
        self.leases, self.lock_identity = leases, lock_identity
        self.lock: ReleaseLock | None = None  # held while this run changes the release

    # -- holding the release

    def _lock_for(self, spec: ReleaseSpec) -> ReleaseLock | None:
        if self.leases is None:
            return None
        return ReleaseLock(self.leases, spec.namespace, spec.name, lease_seconds(spec.wait_timeout),
                           identity=self.lock_identity)

    def _interrupted(self, spec: ReleaseSpec, history: Sequence[Revision]) -> Revision | None:
        """The latest revision, when it is pending because a run of ours died while writing it."""
        if not history or history[-1].status not in PENDING:
            return None
        lock = self._lock_for(spec)
        if lock is None:
            return None
        latest = history[-1]
        return latest if lock.left_pending_by_a_dead_run(latest.revision, revision_time(latest.updated)) else None

    def _hold(self, spec: ReleaseSpec, planned: Sequence[Revision]) -> None:
        """Take the release's Lease (once), then make sure nobody wrote the release since this run read it."""
        if self.lock is None:
            lock = self._lock_for(spec)
            if lock is None:
                return
            try:
                lock.acquire()
            except ReleaseHeld as exc:
                raise ReleaseBusy(str(exc)) from exc
            except NamespaceMissing:
                return  # a first install that creates its namespace: helm's own name check keeps two apart
            self.lock = lock
        now = self._history(spec)
        if [(r.revision, r.status) for r in now[-1:]] != [(r.revision, r.status) for r in planned[-1:]]:
            seen = f"revision {now[-1].revision} ({now[-1].status})" if now else "no release"
            raise ReleaseBusy(f"Another operation is in progress on release {spec.name} in namespace {spec.namespace}: "
                              f"it changed while this run was deciding what to do (now {seen}). Nothing was done; "
                              "run again.")

    def _intend(self, revision: int) -> None:
        if self.lock is not None:
            try:
                self.lock.intend(revision)
            except ReleaseHeld as exc:
                raise ReleaseBusy(str(exc)) from exc

    def _let_go(self, spec: ReleaseSpec) -> None:
        """Best effort: when the API server is gone, the Lease names a dead run and the next run takes over."""
        lock, self.lock = self.lock, None
        if lock is None:
            return
        try:
            history = self._history(spec)
            lock.finish(settled=not history or history[-1].status not in PENDING)
        except (HelmError, KubernetesAccessError):
            pass

    def _recover_interrupted(self, spec: ReleaseSpec, history: Sequence[Revision]) -> list[Revision]:
        """Roll back (or uninstall) the revision a dead run left pending; the release's history afterwards."""
        latest, good = history[-1], self._last_deployed(history)
        try:
            if good is None:
                self._intend(latest.revision)
                self.helm.uninstall(spec.name, spec.namespace, wait=spec.wait, timeout=spec.wait_timeout)
            else:
                self._intend(latest.revision + 1)
                self.helm.rollback(spec.name, spec.namespace, good.revision, wait=spec.wait, timeout=spec.wait_timeout)
        except HelmError as exc:
            raise ReleaseFailed(f"Release {spec.name} in namespace {spec.namespace} was left {latest.status} (revision "
                                f"{latest.revision}) by an interrupted run, and recovering it failed: {exc}",
                                changed=False, status=describe(spec.name, spec.namespace, latest)) from exc
        return self._history(spec)

    # -- reading

    def _history(self, spec: ReleaseSpec) -> list[Revision]:
        history = self.helm.history(spec.name, spec.namespace)
        if history and history[-1].status == "uninstalled":
            return []  # kept history of an uninstalled release: installing starts afresh
        return history

    @staticmethod
    def _last_deployed(history: Sequence[Revision]) -> Revision | None:
        return next((revision for revision in reversed(history) if revision.status == "deployed"), None)

    def _guard(self, spec: ReleaseSpec, history: Sequence[Revision]) -> None:
        message = self._pending(spec, history)
        if message:
            raise ReleaseBusy(message)

    def _pending(self, spec: ReleaseSpec, history: Sequence[Revision]) -> str | None:
        if not history or history[-1].status not in PENDING:
            return None
        latest, good = history[-1], self._last_deployed(history)
        fix = (f"helm rollback {spec.name} {good.revision} -n {spec.namespace}" if good
               else f"helm uninstall {spec.name} -n {spec.namespace}")
        return (f"Another operation is in progress on release {spec.name} in namespace {spec.namespace} (status "
                f"{latest.status}, revision {latest.revision}, since {latest.updated}). Wait for it to finish and run "
                f"again. If nothing else is working on it (an interrupted run leaves this status behind), recover "
                f"with: {fix}")

    def _busy_now(self, spec: ReleaseSpec, error: HelmError) -> ReleaseBusy:
        """helm found the release busy: name the run of ours that holds it, if one does."""
        lock = self._lock_for(spec)
        if lock is not None:
            claim = lock.peek()
            if claim.live(lock.now()):
                return ReleaseBusy(lock.held_message(claim))
        return self._overtaken(spec, error)

    def _overtaken(self, spec: ReleaseSpec, error: HelmError) -> ReleaseBusy:
        """Another client wrote the release between our check and our helm command: its revision is left alone."""
        history = self._history(spec)
        message = self._pending(spec, history)
        if message is None:
            now = f" It is now at revision {history[-1].revision} ({history[-1].status})." if history else ""
            message = (f"Another operation is in progress on release {spec.name} in namespace {spec.namespace}: it "
                       f"changed the release while this run was about to ({error.stderr or error}).{now} Nothing was "
                       "rolled back; run again to apply this run's values.")
        return ReleaseBusy(message)

    def _live_drift(self, documents: Sequence[Mapping[str, Any]], namespace: str) -> tuple[list[Drift],
                                                                                           dict[Any, Any]]:
        drift: list[Drift] = []
        live_objects: dict[Any, Any] = {}
        for document in documents:
            ref = object_ref(document, namespace)
            try:
                live = self.cluster.get(ref[0], ref[1], ref[2], ref[3])
            except UnknownKind:
                continue  # a kind the server does not serve: helm reports that itself
            live_objects[ref] = live
            drift.extend(drift_of(ref, document, live))
        return drift, live_objects

    # -- state: present

    def present(self, spec: ReleaseSpec) -> Outcome:
        try:
            return self._present(spec)
        finally:
            self._let_go(spec)

    def _present(self, spec: ReleaseSpec) -> Outcome:
        history = self._history(spec)
        interrupted = self._interrupted(spec, history)
        recovered = None
        if interrupted is None:
            self._guard(spec, history)
        elif self.check_mode:
            return self._would_recover(spec, history, interrupted)
        else:
            # helm renders nothing for a release it thinks is busy: the dead run's revision goes first.
            self._hold(spec, history)
            good = self._last_deployed(history)
            history = self._recover_interrupted(spec, history)
            recovered = (f"revision {interrupted.revision} was left {interrupted.status} by an interrupted run: "
                         + (f"rolled back to revision {good.revision} first" if good else "uninstalled first"))
        latest = history[-1] if history else None
        current_values: dict[str, Any] = {}
        current_manifest = ""
        if latest:
            current_values, current_manifest = self.helm.release(spec.name, spec.namespace, latest.revision)
        values_file = self.write_values(spec.values)
        try:
            rendered = self.helm.render(spec.name, spec.namespace, spec.chart, values_file)
        except HelmError as exc:
            if BUSY_ERRORS.search(exc.stderr or str(exc)):  # another run started writing since we read the history
                raise self._busy_now(spec, exc) from exc
            raise
        exact = re.fullmatch(r"v?(\d+\.\d+\.\d+(?:[-+].*)?)", spec.chart.version or "")  # not a range
        if exact and rendered.chart_version.lstrip("v") != exact.group(1):
            raise InvalidRequest(f"The chart at {spec.chart.ref} is {rendered.chart}, not version {spec.chart.version} "
                                 "(chart_version): fix chart_version or point chart_ref at that version.")
        current_docs, desired_docs = parse_manifest(current_manifest), parse_manifest(rendered.manifest)
        self.masker.collect_values(current_values)
        self.masker.collect_values(rendered.values)
        self.masker.collect_manifest(current_docs)
        self.masker.collect_manifest(desired_docs)

        reasons = []
        if latest is None:
            reasons.append(f"release {spec.name} is not installed")
        else:
            if latest.status != "deployed":
                reasons.append(f"revision {latest.revision} is {latest.status}")
            if latest.chart != rendered.chart:
                reasons.append(f"chart {latest.chart} -> {rendered.chart}")
            if not values_equal(current_values, rendered.values):
                reasons.append("values differ")
            if not manifests_equal(current_docs, desired_docs, spec.namespace):
                reasons.append("rendered manifest differs")
        drift: list[Drift] = []
        if latest is not None and latest.status == "deployed":
            drift = self._live_drift(current_docs, spec.namespace)[0]
        if any(item.path is None for item in drift):
            reasons.append("objects of the release were deleted")
        public_drift = [item.public(self.masker) for item in drift]
        diff = self._diff(spec, latest, current_values, rendered, current_docs, desired_docs, public_drift)
        outcome = Outcome(changed=bool(reasons or drift or recovered), action="none",
                          reasons=[recovered] * bool(recovered) + reasons,
                          status=describe(spec.name, spec.namespace, latest), values=self.masker.values(rendered.values),
                          drift=public_drift, diff=diff)
        if reasons:
            outcome.action = "install" if latest is None else "upgrade"
        elif drift:
            outcome.action = "repair"
        elif recovered:
            outcome.action = "recover"
        if self.check_mode or not (reasons or drift):
            return outcome

        self._hold(spec, history)
        if reasons:
            self._upgrade(spec, history, rendered, desired_docs, values_file, reasons, public_drift)
        # Helm's three-way merge puts back what the manifest sets; what it leaves (an env var or a ConfigMap key
        # added by hand), and all drift when no upgrade was needed, is patched back here.
        residual, live_objects = self._live_drift(desired_docs, spec.namespace)
        if residual:
            self._repair(residual, live_objects, public_drift)
            if spec.wait:
                self._wait_or_fail(spec, desired_docs, deadline=self.clock() + spec.wait_timeout,
                                   drift=public_drift, what=f"Repairing drift of release {spec.name}")
        outcome.status = describe(spec.name, spec.namespace, (self._history(spec) or [None])[-1])
        return outcome

    def _would_recover(self, spec: ReleaseSpec, history: Sequence[Revision], interrupted: Revision) -> Outcome:
        """Check mode on a revision a dead run left pending: helm renders nothing for it, so the values tell."""
        good = self._last_deployed(history)
        label = f"{spec.namespace}/{spec.name}"
        values: dict[str, Any] = {}
        if good is not None:
            values = self.helm.release(spec.name, spec.namespace, good.revision)[0]
            self.masker.collect_values(values)
        recovery = f"would roll back to revision {good.revision}" if good else "would uninstall it"
        diff = [{"before_header": f"{label} values ({f'revision {good.revision}' if good else 'not installed'})",
                 "after_header": f"{label} values (desired)", "before": _yaml(self.masker.values(values)),
                 "after": _yaml(self.masker.values(spec.values))}]
        return Outcome(changed=True, action="recover", reasons=[
            f"revision {interrupted.revision} was left {interrupted.status} by an interrupted run: {recovery}, then "
            "apply the desired chart and values"], status=describe(spec.name, spec.namespace, interrupted),
            values=self.masker.values(spec.values), diff=diff)

    def _diff(self, spec: ReleaseSpec, latest: Revision | None, current_values: Mapping[str, Any], rendered: Rendered,
              current_docs: Sequence[Mapping[str, Any]], desired_docs: Sequence[Mapping[str, Any]],
              drift: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        label = f"{spec.namespace}/{spec.name}"
        revision = f"revision {latest.revision}" if latest else "not installed"
        entries = []
        before = _yaml(self.masker.values(current_values)) if latest else ""
        after = _yaml(self.masker.values(rendered.values))
        if latest is None or before != after:
            entries.append({"before_header": f"{label} values ({revision})", "after_header": f"{label} values (desired)",
                            "before": before, "after": after})
        before = dump_documents([self.masker.manifest_object(d) for d in current_docs])
        after = dump_documents([self.masker.manifest_object(d) for d in desired_docs])
        if before != after:
            entries.append({"before_header": f"{label} manifest ({revision})",
                            "after_header": f"{label} manifest (desired, {rendered.chart})",
                            "before": before, "after": after})
        if drift:
            live = {f"{item['object']} {item['field']}": item["live"] for item in drift}
            desired = {f"{item['object']} {item['field']}": item["desired"] for item in drift}
            entries.append({"before_header": f"{label} live objects (drifted)",
                            "after_header": f"{label} live objects (as the release defines them)",
                            "before": _yaml(live), "after": _yaml(desired)})
        return entries

    def _repair(self, drift: Sequence[Drift], live_objects: Mapping[Any, Any], reported: list[dict[str, Any]]) -> None:
        by_object: dict[Any, list[Drift]] = {}
        for item in drift:
            by_object.setdefault(item.ref, []).append(item)
        for ref, items in by_object.items():
            live = live_objects.get(ref)
            if live is None:
                continue  # gone again: the next run recreates it through helm
            version = (live.get("metadata") or {}).get("resourceVersion")
            self.cluster.patch(ref[0], ref[1], ref[2], ref[3], repair_operations(items, version))
            for item in items:
                public = item.public(self.masker)
                if public not in reported:
                    reported.append(public)

    def _deployments(self, documents: Sequence[Mapping[str, Any]], namespace: str) -> list[tuple[str, str]]:
        return [(object_ref(d, namespace)[2], object_ref(d, namespace)[3]) for d in documents
                if d.get("kind") == "Deployment"]

    def _not_available(self, documents: Sequence[Mapping[str, Any]], namespace: str) -> tuple[list[str], bool]:
        waiting, hopeless = [], False
        for deployment_namespace, name in self._deployments(documents, namespace):
            live = self.cluster.get("apps/v1", "Deployment", deployment_namespace, name)
            if live is None:
                waiting.append(f"Deployment {name} does not exist")
                continue
            available, stuck, why = rollout_state(live)
            if not available:
                waiting.append(why)
                hopeless = hopeless or stuck
        return waiting, hopeless

    def stuck_watch(self, documents: Sequence[Mapping[str, Any]], namespace: str,
                    patience: float) -> Callable[[], str | None]:
        """A check to call while the rollout runs: says so once a container has been stuck for `patience` seconds.

        Stuck means waiting for one of STUCK_REASONS, continuously (ErrImagePull and ImagePullBackOff alternate:
        both count as the same wait); pods being deleted (the old ReplicaSet's) do not count.
        """
        since: dict[tuple[str, str], float] = {}

        def check() -> str | None:
            try:
                return look()
            except ApiUnavailable:
                return None  # no verdict while the API server is away: helm's own wait goes on

        def look() -> str | None:
            now, seen = self.clock(), set()
            worst: tuple[float, str] | None = None
            for deployment_namespace, name in self._deployments(documents, namespace):
                live = self.cluster.get("apps/v1", "Deployment", deployment_namespace, name)
                selector = label_selector(((live or {}).get("spec") or {}).get("selector"))
                for pod in self.cluster.pods(deployment_namespace, selector) if selector else []:
                    if (pod.get("metadata") or {}).get("deletionTimestamp"):
                        continue
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

        return check

    def wait_available(self, documents: Sequence[Mapping[str, Any]], namespace: str, deadline: float) -> list[str]:
        """Poll until every Deployment of the manifest is available; what is still missing at the deadline.

        An API server that is briefly away (restarting, overloaded) is waited for too, up to the same deadline.
        """
        while True:
            try:
                waiting, hopeless = self._not_available(documents, namespace)
            except ApiUnavailable:
                if self.clock() >= deadline:
                    raise
                waiting, hopeless = ["the API server is not answering"], False
            if not waiting or hopeless or self.clock() >= deadline:
                return waiting
            self.sleep(min(self.poll, max(0.0, deadline - self.clock())))

    def collect_diagnostics(self, documents: Sequence[Mapping[str, Any]], namespace: str) -> dict[str, Any]:
        found: dict[str, Any] = {"deployments": [], "pods": [], "events": []}
        names, prefixes = set(), []
        events_by_namespace: dict[str, list[dict[str, Any]]] = {}
        for deployment_namespace, name in self._deployments(documents, namespace):
            live = self.cluster.get("apps/v1", "Deployment", deployment_namespace, name)
            if live is None:
                found["deployments"].append({"name": name, "state": f"Deployment {name} does not exist"})
                continue
            available, _hopeless, why = rollout_state(live)
            if available:
                continue
            conditions = [f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".strip()
                          for c in (live.get("status") or {}).get("conditions") or []
                          if c.get("status") != "True" or c.get("reason") == "ProgressDeadlineExceeded"]
            found["deployments"].append({"name": name, "state": why, "conditions": conditions})
            names.add(name)
            prefixes.append(f"{name}-")
            selector = label_selector((live.get("spec") or {}).get("selector"))
            for pod in self.cluster.pods(deployment_namespace, selector) if selector else []:
                problem = pod_problems(pod)
                if problem and not (pod.get("metadata") or {}).get("deletionTimestamp"):
                    found["pods"].append(problem)
                    names.add(problem["pod"])
            if deployment_namespace not in events_by_namespace:
                events_by_namespace[deployment_namespace] = self.cluster.warning_events(deployment_namespace)
        for events in events_by_namespace.values():
            found["events"].extend(related_events(events, names, prefixes))
        return canonical(self.masker.values(found))

    def _wait_or_fail(self, spec: ReleaseSpec, documents: Sequence[Mapping[str, Any]], deadline: float,
                      drift: list[dict[str, Any]], what: str) -> None:
        waiting = self.wait_available(documents, spec.namespace, deadline)
        if not waiting:
            return
        diagnostics = self.collect_diagnostics(documents, spec.namespace)
        raise ReleaseFailed(
            self.masker.text(f"{what} failed: " + "; ".join(waiting) + f" (waited up to {spec.wait_timeout}s).\n"
                             + format_diagnostics(diagnostics)),
            changed=True, diagnostics=diagnostics, drift=drift,
            status=describe(spec.name, spec.namespace, (self._history(spec) or [None])[-1]))

    def _upgrade(self, spec: ReleaseSpec, history: Sequence[Revision], rendered: Rendered,
                 documents: Sequence[Mapping[str, Any]], values_file: str, reasons: Sequence[str],
                 drift: list[dict[str, Any]]) -> None:
        verb = "Upgrading" if history else "Installing"
        what = f"{verb} release {spec.name} in namespace {spec.namespace} to chart {rendered.chart}"
        previous = history[-1].revision if history else 0
        started = self.clock()
        problem: str | None = None
        description = self.masker.text(f"agent_deployment {verb.lower()}: " + "; ".join(reasons))[:200]
        self._intend(previous + 1)
        watch = self.stuck_watch(documents, spec.namespace, spec.stuck_timeout) if spec.stuck_timeout else None
        try:
            self.helm.upgrade(spec.name, spec.namespace, spec.chart, values_file, wait=spec.wait,
                              timeout=spec.wait_timeout, create_namespace=spec.create_namespace,
                              description=description, watch=watch, poll=self.poll, sleep=self.sleep)
            if spec.wait:
                deadline = max(started + spec.wait_timeout, self.clock() + 10)
                waiting = self.wait_available(documents, spec.namespace, deadline)
                if waiting:
                    problem = "; ".join(waiting) + f" (waited up to {spec.wait_timeout}s)"
        except StoppedWaiting as exc:
            problem = str(exc)
        except HelmError as exc:
            if BUSY_ERRORS.search(exc.stderr or str(exc)):
                raise self._overtaken(spec, exc) from exc  # the new revision is not ours: never roll it back
            problem = str(exc)
        if problem is None:
            return

        after = self._history(spec)
        created = bool(after) and after[-1].revision > previous
        diagnostics = self.collect_diagnostics(documents, spec.namespace) if created else None
        lines = [f"{what} failed: {problem}"]
        if not created:
            lines.append("helm created no new revision; nothing on the cluster was changed.")
        elif not spec.atomic:
            good = self._last_deployed(after[:-1])
            fix = (f"helm rollback {spec.name} {good.revision} -n {spec.namespace}" if good
                   else f"helm uninstall {spec.name} -n {spec.namespace}")
            lines.append(f"The release was left at revision {after[-1].revision} ({after[-1].status}) because atomic "
                         f"is false. To go back: {fix}")
        else:
            lines.append(self._recover(spec, history, after))
        if diagnostics:
            text = format_diagnostics(diagnostics)
            if text:
                lines.append(text)
        raise ReleaseFailed(self.masker.text("\n".join(lines)), changed=created, diagnostics=diagnostics,
                            drift=drift, status=describe(spec.name, spec.namespace, (self._history(spec) or [None])[-1]))

    def _recover(self, spec: ReleaseSpec, history: Sequence[Revision], after: Sequence[Revision]) -> str:
        good = self._last_deployed(history)
        try:
            if good is None:
                self._intend(after[-1].revision)
                self.helm.uninstall(spec.name, spec.namespace, wait=spec.wait, timeout=spec.wait_timeout)
                return (f"The release had no working revision before, so it was uninstalled (release {spec.name} "
                        "is gone).")
            self._intend(after[-1].revision + 1)
            self.helm.rollback(spec.name, spec.namespace, good.revision, wait=spec.wait, timeout=spec.wait_timeout)
        except HelmError as exc:
            fix = (f"helm rollback {spec.name} {good.revision} -n {spec.namespace}" if good
                   else f"helm uninstall {spec.name} -n {spec.namespace}")
            return f"Recovering failed as well ({exc}). Fix it with: {fix}"
        now = (self._history(spec) or [None])[-1]
        return (f"Rolled back to revision {good.revision} (chart {good.chart}), the last deployed one"
                + (f"; the release is now at revision {now.revision}." if now else "."))

    # -- state: absent

    def absent(self, spec: ReleaseSpec, wait: bool, timeout: int) -> Outcome:
        history = self._history(spec)
        if not history:
            return Outcome(changed=False, action="none")
        if self._interrupted(spec, history) is None:  # a dead run's pending revision is uninstalled with the rest
            self._guard(spec, history)
        latest = history[-1]
        values, manifest = self.helm.release(spec.name, spec.namespace, latest.revision)
        self.masker.collect_values(values)
        documents = parse_manifest(manifest)
        self.masker.collect_manifest(documents)
        label = f"{spec.namespace}/{spec.name}"
        diff = [{"before_header": f"{label} values (revision {latest.revision})", "after_header": f"{label} (absent)",
                 "before": _yaml(self.masker.values(values)), "after": ""},
                {"before_header": f"{label} manifest (revision {latest.revision})", "after_header": f"{label} (absent)",
                 "before": dump_documents([self.masker.manifest_object(d) for d in documents]), "after": ""}]
        outcome = Outcome(changed=True, action="uninstall", reasons=[f"release {spec.name} is installed"],
                          status=describe(spec.name, spec.namespace, latest), diff=diff)
        if not self.check_mode:
            self._hold(spec, history)
            try:
                self._intend(latest.revision)
                self.helm.uninstall(spec.name, spec.namespace, wait=wait, timeout=timeout)
                lock, self.lock = self.lock, None
                if lock is not None:
                    try:
                        lock.remove()  # the release is gone: so is its bookkeeping
                    except KubernetesAccessError:
                        pass
            finally:
                self._let_go(spec)
            outcome.status = {}
        return outcome
