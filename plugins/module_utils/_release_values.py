# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the release should hold: values composed the way helm merges them, and the request as one ReleaseSpec.

Values are compared in the JSON form helm stores, so that a value the playbook writes as 1 and helm keeps
as 1.0 is not taken for a change.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

try:
    import yaml
    HAS_YAML = True
except ImportError:
    HAS_YAML = False

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import ChartSource
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import InvalidReleaseRequest


@dataclass
class ReleaseSpec:
    """One release as the playbook asks for it: the chart, the composed values and how to apply them."""

    name: str
    namespace: str
    chart: ChartSource
    values: dict[str, Any]
    wait: bool = True
    wait_timeout: int = 300
    atomic: bool = True
    create_namespace: bool = False
    stuck_timeout: int = 0  # seconds a container may stay in a STUCK_REASONS state before waiting stops; 0: never
    force: bool = False  # upgrade or uninstall the release even when it holds another chart


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
    """Whether helm would store the same values for both."""
    return canonical(a or {}) == canonical(b or {})


def to_yaml(value: Any) -> str:
    """Stable YAML for a diff, empty for nothing, so that an empty side shows as absent."""
    return dump_yaml(canonical(value)) if value else ""


def dump_yaml(value: Any) -> str:
    """Block YAML with sorted keys: the same data always reads the same in a diff."""
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False)


def load_yaml_documents(text: str) -> list[Any]:
    """Every document of a YAML stream (this file holds the collection's one optional PyYAML import)."""
    return list(yaml.safe_load_all(text))


def load_values_file(path: str) -> dict[str, Any]:
    """One values file as a mapping; every way it can be unusable is an InvalidReleaseRequest naming the file."""
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise InvalidReleaseRequest(f"Values file {path} does not exist (values_files): fix the path.")
    try:
        with open(expanded, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidReleaseRequest(f"Values file {path} cannot be read as YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidReleaseRequest(f"Values file {path} holds a {type(loaded).__name__}, not a mapping of chart values.")
    return loaded
