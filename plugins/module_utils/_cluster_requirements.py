# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see LICENSE)
"""The management agent's published cluster minimums, as pure functions.

Per node: 2 CPUs, 6 GiB memory and 40 GiB ephemeral storage (the image cache);
Kubernetes 1.19 or OpenShift 4.6 at least. Keeping the decision apart
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
    """Per-node minimums the agent needs: 2+ CPUs, 6+ GiB memory, 40+ GiB storage (image cache)."""

    cpu: Decimal = Decimal(2)
    memory: Decimal = Decimal(6 * GIB)
    ephemeral_storage: Decimal = Decimal(40 * GIB)

    @classmethod
    def from_strings(cls, cpu: str, memory: str, ephemeral_storage: str) -> "Minimums":
        return cls(parse_quantity(cpu), parse_quantity(memory), parse_quantity(ephemeral_storage))


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    cpu: Decimal
    memory: Decimal
    ephemeral_storage: Decimal
    schedulable: bool = True

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> "NodeCapacity":
        """Read a Node object (as a dict); allocatable is what pods can really use."""
        status = node.get("status") or {}
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        spec = node.get("spec") or {}
        return cls(
            name=(node.get("metadata") or {}).get("name", "<unnamed>"),
            cpu=parse_quantity(allocatable.get("cpu", "0")),
            memory=parse_quantity(allocatable.get("memory", "0")),
            ephemeral_storage=parse_quantity(allocatable.get("ephemeral-storage", "0")),
            schedulable=not spec.get("unschedulable", False) and conditions.get("Ready") == "True",
        )

    def shortfalls(self, minimums: Minimums) -> list[str]:
        gaps = []
        if self.cpu < minimums.cpu:
            gaps.append(f"cpu {_cores(self.cpu)} < {_cores(minimums.cpu)}")
        if self.memory < minimums.memory:
            gaps.append(f"memory {_gib(self.memory)} < {_gib(minimums.memory)}")
        if self.ephemeral_storage < minimums.ephemeral_storage:
            gaps.append(f"ephemeral-storage {_gib(self.ephemeral_storage)} < {_gib(minimums.ephemeral_storage)}")
        if not self.schedulable:
            gaps.append("not Ready or cordoned")
        return gaps


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
    node_list = list(nodes)
    gaps = {node.name: node.shortfalls(minimums) for node in node_list}
    result.fitting_nodes = sorted(name for name, gap in gaps.items() if not gap)
    if not result.fitting_nodes:
        detail = "; ".join(f"{name}: {', '.join(gap)}" for name, gap in sorted(gaps.items())) or "the cluster has no nodes"
        result.unmet.append(
            f"No schedulable node has at least {_cores(minimums.cpu)} CPU, {_gib(minimums.memory)} memory and "
            f"{_gib(minimums.ephemeral_storage)} ephemeral storage ({detail}): add or resize a node pool.")
    return result
