# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see LICENSE)
"""The management agent's published cluster minimums, as pure functions.

Per node: 2 CPUs, 6 GB memory and 40 GB of instance storage (the image cache), compared with the node's
capacity as the requirements mean the machine; Kubernetes 1.19 or OpenShift 4.6 at least. Keeping the decision apart
from the API calls lets preflight be tested on plain data and lets every unmet
requirement be reported in one message instead of one failure at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Mapping

try:
    from kubernetes.utils import parse_quantity as _k8s_quantity
except ImportError:  # AnsibleK8SModule reports the missing library before any quantity is read
    _k8s_quantity = None
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

MIN_KUBERNETES: tuple[int, int] = (1, 19)
MIN_OPENSHIFT: tuple[int, int] = (4, 6)
OPENSHIFT_API_GROUPS = frozenset({"route.openshift.io", "config.openshift.io", "security.openshift.io"})

_VERSION = re.compile(r"^v?(\d+)\.(\d+)")
GIB = 2**30


class RequirementError(MlopsError, ValueError):
    """A value from the cluster or the user that cannot be interpreted."""


def parse_quantity(quantity: str | int | float) -> Decimal:
    """Kubernetes resource quantity ("2", "1500m", "6Gi", "40G", "1e3") as a Decimal.

    The kubernetes client does the parsing; this wrapper only turns its ValueError into a
    RequirementError that names the value and refuses NaN/Infinity, which no node reports.
    """
    if _k8s_quantity is None:
        raise RequirementError("the kubernetes Python library is needed to read resource quantities")
    text = str(quantity).strip()
    try:
        value = _k8s_quantity(text)
    except (ValueError, ArithmeticError) as exc:
        raise RequirementError(
            f"{quantity!r} is not a Kubernetes quantity or has an unknown unit (examples: 2, 1500m, 6Gi, 40G)"
        ) from exc
    if not value.is_finite():
        raise RequirementError(f"{quantity!r} is not a Kubernetes quantity (examples: 2, 1500m, 6Gi, 40G)")
    return value


def parse_version(text: str) -> tuple[int, int]:
    """(major, minor) from "v1.35.4", "1.19+" or "4.14.3"."""
    match = _VERSION.match(str(text).strip())
    if not match:
        raise RequirementError(f"cannot read a version from {text!r}")
    return int(match.group(1)), int(match.group(2))


def server_version(version_info: Mapping[str, Any]) -> tuple[int, int]:
    """The API server's /version answer as (major, minor); minor may carry a '+' on managed clusters."""
    git_version = version_info.get("gitVersion") or version_info.get("git_version")
    if git_version:
        return parse_version(git_version)
    major = re.sub(r"\D", "", str(version_info.get("major", "")))
    minor = re.sub(r"\D", "", str(version_info.get("minor", "")))
    if not major or not minor:
        raise RequirementError(f"the API server's version answer has no version: {dict(version_info)!r}")
    return int(major), int(minor)


def is_openshift(api_groups: Iterable[str]) -> bool:
    """OpenShift serves its own API groups; plain Kubernetes never does."""
    return bool(OPENSHIFT_API_GROUPS.intersection(api_groups))


@dataclass(frozen=True)
class Minimums:
    """Per-node minimums as the agent's requirements state them: 2+ CPUs, 6+ GB memory, 40+ GB instance storage.

    They describe the machine (its capacity), not what is left for pods after the kubelet's reservations: a
    standard 2-vCPU node has about 1.9 allocatable CPUs. Storage defaults to 38 GB, what the filesystem of a
    40 GB disk reports.
    """

    cpu: Decimal = Decimal(2)
    memory: Decimal = Decimal(6 * 10**9)
    ephemeral_storage: Decimal = Decimal(38 * 10**9)
    text: tuple[str, str, str] = ("2", "6G", "38G")

    @classmethod
    def from_strings(cls, cpu: str, memory: str, ephemeral_storage: str) -> "Minimums":
        return cls(parse_quantity(cpu), parse_quantity(memory), parse_quantity(ephemeral_storage),
                   (cpu, memory, ephemeral_storage))


@dataclass(frozen=True)
class Resources:
    cpu: Decimal
    memory: Decimal
    ephemeral_storage: Decimal

    @classmethod
    def read(cls, quantities: Mapping[str, Any]) -> "Resources":
        return cls(parse_quantity(quantities.get("cpu", "0")), parse_quantity(quantities.get("memory", "0")),
                   parse_quantity(quantities.get("ephemeral-storage", "0")))

    def as_dict(self) -> dict[str, str]:
        return {"cpu": _cores(self.cpu), "memory": _gib(self.memory), "ephemeral_storage": _gib(self.ephemeral_storage)}


@dataclass(frozen=True)
class NodeCapacity:
    """A node as preflight judges it: its capacity against the minimums, its allocatable shown beside."""

    name: str
    capacity: Resources
    allocatable: Resources
    schedulable: bool = True

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> "NodeCapacity":
        """Read a Node object (as a dict); a node that reports only one of capacity/allocatable uses it for both."""
        status = node.get("status") or {}
        capacity = status.get("capacity") or status.get("allocatable") or {}
        allocatable = status.get("allocatable") or capacity
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        spec = node.get("spec") or {}
        return cls(
            name=(node.get("metadata") or {}).get("name", "<unnamed>"),
            capacity=Resources.read(capacity),
            allocatable=Resources.read(allocatable),
            schedulable=not spec.get("unschedulable", False) and conditions.get("Ready") == "True",
        )

    def shortfalls(self, minimums: Minimums) -> list[str]:
        """One phrase per resource whose capacity is below the minimum, allocatable in brackets."""
        gaps = []
        for label, show, have, free, need, need_text in (
                ("cpu", _cores, self.capacity.cpu, self.allocatable.cpu, minimums.cpu, minimums.text[0]),
                ("memory", _gib, self.capacity.memory, self.allocatable.memory, minimums.memory, minimums.text[1]),
                ("ephemeral-storage", _gib, self.capacity.ephemeral_storage, self.allocatable.ephemeral_storage,
                 minimums.ephemeral_storage, minimums.text[2])):
            if have < need:
                gaps.append(f"{label} capacity {show(have)} ({show(free)} allocatable) < {need_text}")
        if not self.schedulable:
            gaps.append("not Ready or cordoned")
        return gaps

    def report(self, minimums: Minimums) -> dict[str, Any]:
        """The node as the module returns it."""
        return {"name": self.name, "capacity": self.capacity.as_dict(), "allocatable": self.allocatable.as_dict(),
                "schedulable": self.schedulable, "shortfalls": self.shortfalls(minimums)}


def _cores(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _gib(value: Decimal) -> str:
    return f"{(value / GIB).quantize(Decimal('0.1'))}Gi"


@dataclass
class Assessment:
    """What preflight found; `unmet` holds one actionable line per failed requirement."""

    platform: str
    version: tuple[int, int]
    fitting_nodes: list[str] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unmet


def assess(
    version: tuple[int, int],
    platform: str,
    nodes: Iterable[NodeCapacity],
    minimums: Minimums = Minimums(),
    openshift_version: tuple[int, int] | None = None,
) -> Assessment:
    """Check the version and node minimums; collect every gap rather than stopping at the first."""
    result = Assessment(platform=platform, version=version)
    if version < MIN_KUBERNETES:
        result.unmet.append(
            "Kubernetes %d.%d is older than the supported %d.%d: upgrade the cluster." % (version + MIN_KUBERNETES))
    if platform == "openshift" and openshift_version is not None and openshift_version < MIN_OPENSHIFT:
        result.unmet.append(
            "OpenShift %d.%d is older than the supported %d.%d: upgrade the cluster."
            % (openshift_version + MIN_OPENSHIFT))
    result.nodes = sorted((node.report(minimums) for node in nodes), key=lambda node: node["name"])
    result.fitting_nodes = [node["name"] for node in result.nodes if not node["shortfalls"]]
    if not result.fitting_nodes:
        detail = "; ".join(f"{node['name']}: {', '.join(node['shortfalls'])}" for node in result.nodes) or \
            "the cluster has no nodes"
        cpu, memory, storage = minimums.text
        result.unmet.append(
            f"No schedulable node has at least {cpu} CPU, {memory} memory and {storage} ephemeral storage "
            f"(node capacity) ({detail}): add or resize a node pool, or lower the minimums (min_node_cpu, "
            "min_node_memory, min_node_ephemeral_storage; mlops_preflight_min_node_* in the preflight role).")
    return result
