# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A release's manifest as objects, and how the live objects drifted from it.

Drift is looked for only in the fields the agent depends on (workload images, replicas and env,
ConfigMap and Secret data, deleted objects): the API server fills in defaults everywhere else, and a
whole-object comparison would report those as changes. Each drift carries the JSON patch that repairs it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import (
    MASK,
    Masker,
    is_sensitive_key,
    masked_scalar,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import (
    canonical,
    dump_yaml,
    load_yaml_documents,
)

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
REMOVE = object()  # a drift repaired by removing the live field
ABSENT = "(absent)"


class ObjectRef(NamedTuple):
    """Which object a manifest document is, as the Kubernetes API addresses it."""

    api_version: str
    kind: str
    namespace: str
    name: str


def parse_manifest(text: str) -> list[dict[str, Any]]:
    """The objects of a rendered manifest (empty documents and comments dropped)."""
    if not text.strip():
        return []
    return [document for document in load_yaml_documents(text) if isinstance(document, dict) and document]


def object_ref(document: Mapping[str, Any], namespace: str) -> ObjectRef:
    """The document's reference; an object without a namespace lives in the release's."""
    metadata = document.get("metadata") or {}
    return ObjectRef(str(document.get("apiVersion", "")), str(document.get("kind", "")),
                     str(metadata.get("namespace") or namespace), str(metadata.get("name", "")))


def object_label(document: Mapping[str, Any]) -> str:
    return f"{document.get('kind')}/{(document.get('metadata') or {}).get('name')}"


def manifests_equal(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], namespace: str) -> bool:
    """Same objects with the same content, whatever order helm rendered them in."""
    def keyed(documents: Sequence[Mapping[str, Any]]) -> dict[ObjectRef, Any]:
        return {object_ref(document, namespace): canonical(document) for document in documents}

    return keyed(a) == keyed(b)


def dump_documents(documents: Sequence[Mapping[str, Any]]) -> str:
    """A stable text form of a manifest for diffs: sorted by kind and name."""
    ordered = sorted(documents, key=lambda document: (str(document.get("kind")), object_label(document)))
    return "".join("---\n" + dump_yaml(document) for document in ordered)


@dataclass
class Drift:
    """One field of one live object that differs from the manifest, and how to put it back."""

    ref: ObjectRef
    field: str                              # readable, e.g. spec.template.spec.containers[agent].image
    live: Any
    desired: Any
    path: str | None = None                 # JSON pointer to repair; None: the object is gone, helm recreates it
    value: Any = None                       # what to write at path (REMOVE to delete it)
    sensitive: bool = False

    def __post_init__(self) -> None:
        self.ref = ObjectRef(*self.ref)

    @property
    def object(self) -> str:
        return f"{self.ref.kind}/{self.ref.name}"

    def public(self, masker: Masker) -> dict[str, Any]:
        """The drift as the module returns it, secrets masked."""
        def show(value: Any) -> Any:
            if self.sensitive and masked_scalar(value) and value != ABSENT:
                return MASK
            return masker.values(value) if isinstance(value, (dict, list)) else (
                masker.text(value) if isinstance(value, str) else value)

        return {"object": self.object, "field": self.field, "live": show(self.live), "desired": show(self.desired)}


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
    """Env entries by name, normalised as the API server stores them (values as strings, empty ones dropped)."""
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


def _workload_drift(ref: ObjectRef, desired: Mapping[str, Any],
                    live: Mapping[str, Any]) -> list[Drift]:
    found: list[Drift] = []
    want_spec, have_spec = desired.get("spec") or {}, live.get("spec") or {}
    if ref.kind != "DaemonSet" and "replicas" in want_spec:
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


def _data_drift(ref: ObjectRef, section: str, want: Mapping[str, Any], have: Mapping[str, Any],
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


def drift_of(ref: ObjectRef, desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[Drift]:
    """How one live object differs from its manifest, in the fields the agent depends on."""
    ref = ObjectRef(*ref)
    if live is None:
        return [Drift(ref, "(object)", ABSENT, "present")]
    kind = ref.kind
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
