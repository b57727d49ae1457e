# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What cluster_requirements does between its arguments and its result: ask the cluster, judge, report.

The reading is ReadOnlyCluster's, the judging _cluster_requirements' pure functions; this joins them into the
module's return values, and into one RequirementsUnmet (carrying the same values) when the user asked to fail.
"""

from __future__ import annotations

from typing import Any, Mapping

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._cluster_requirements import (
    Minimums,
    NodeCapacity,
    assess,
    is_openshift,
    parse_version,
    server_version,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import ReadOnlyCluster


class RequirementsUnmet(MlopsError):
    """The cluster falls short; `result` holds the whole survey for the failed task's output."""

    def __init__(self, unmet: list[str], result: dict[str, Any]) -> None:
        super().__init__("The cluster does not meet the management agent's requirements:\n- " + "\n- ".join(unmet))
        self.result = result


def survey(cluster: ReadOnlyCluster, params: Mapping[str, Any]) -> dict[str, Any]:
    """The module's return values for the cluster `cluster` reaches, judged by the minimums in `params`."""
    minimums = Minimums.from_strings(
        params["min_node_cpu"], params["min_node_memory"], params["min_node_ephemeral_storage"])
    platform = params["platform"]
    if platform == "auto":
        platform = "openshift" if is_openshift(cluster.api_groups()) else "kubernetes"
    openshift_version_text = cluster.openshift_version() if platform == "openshift" else None
    version = server_version(cluster.version())
    assessment = assess(
        version=version,
        platform=platform,
        nodes=[NodeCapacity.from_node(node) for node in cluster.nodes(params["node_selector"] or "")],
        minimums=minimums,
        openshift_version=parse_version(openshift_version_text) if openshift_version_text else None,
    )
    assessment.unmet.extend(cluster.denied_permissions(params["permissions"] + params[f"{platform}_permissions"]))
    result = dict(changed=False, platform=platform, server_version="%d.%d" % version,
                  fitting_nodes=assessment.fitting_nodes, nodes=assessment.nodes,
                  ingress_classes=cluster.ingress_classes(),
                  unmet=assessment.unmet)
    if openshift_version_text:
        result["openshift_version"] = "%d.%d" % parse_version(openshift_version_text)
    if assessment.unmet and params["fail_on_unmet"]:
        raise RequirementsUnmet(assessment.unmet, {k: v for k, v in result.items() if k != "changed"})
    return result
