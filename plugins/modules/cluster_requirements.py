#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_requirements
short_description: Check a cluster against the DataRobot MLOps management agent's minimums
version_added: 0.1.0
description:
  - Reads the API server version, the nodes' allocatable resources, the served API groups and the
    ingress classes, and checks them against the management agent's published minimums (Kubernetes
    1.19, OpenShift 4.6, a node with 2 CPU, 6 GiB memory and 40 GiB ephemeral storage).
  - Optionally asks the API server, through SelfSubjectAccessReview, whether the caller may perform
    each action in I(permissions).
  - Every unmet requirement is listed in one failure message with the fix, so a user sees all of
    them at once, before anything on the cluster is changed.
  - Changes nothing on the cluster.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
extends_documentation_fragment:
  - datarobot_mlops.management_agent.action_group.k8s
  - kubernetes.core.k8s_auth_options
  - datarobot_mlops.management_agent.read_only
options:
  platform:
    description:
      - C(auto) detects OpenShift by its API groups (C(route.openshift.io), C(config.openshift.io),
        C(security.openshift.io)); otherwise the cluster is plain C(kubernetes).
    type: str
    choices: [auto, kubernetes, openshift]
    default: auto
  min_node_cpu:
    description:
      - CPUs one node must have at least (node capacity), as a Kubernetes quantity.
      - Capacity, not allocatable, is compared, as the agent's requirements mean the machine; a standard 2-vCPU
        node has about 1.9 allocatable CPUs. Allocatable is shown beside it in I(nodes) and in the message.
    type: str
    default: "2"
  min_node_memory:
    description: Memory one node must have at least (node capacity), as a Kubernetes quantity. C(6G) is the
      requirements' 6 GB.
    type: str
    default: 6G
  min_node_ephemeral_storage:
    description: Ephemeral storage (the image cache) one node must have at least (node capacity). The default
      C(38G) is what the filesystem of the requirements' 40 GB disk reports.
    type: str
    default: 38G
  node_selector:
    description: Label selector of the nodes to judge, e.g. the node pool the agent runs on
      (C(eks.amazonaws.com/nodegroup=mlops)). Default every node.
    type: str
  permissions:
    description:
      - Actions the caller must be allowed to perform; each is checked with a SelfSubjectAccessReview.
    type: list
    elements: dict
    default: []
    suboptions: &permission
      verb:
        description: API verb such as C(create), C(patch) or C(get).
        type: str
        required: true
      resource:
        description: Resource plural such as C(deployments) or C(securitycontextconstraints).
        type: str
        required: true
      group:
        description: API group; empty for the core group.
        type: str
        default: ""
      subresource:
        description: Subresource such as C(token) (with I(resource=serviceaccounts), the TokenRequest API) or C(status).
        type: str
      namespace:
        description: Namespace; omit for cluster-scoped checks.
        type: str
  openshift_permissions:
    description: Like I(permissions), checked only when the platform is OpenShift.
    type: list
    elements: dict
    default: []
    suboptions: *permission
  kubernetes_permissions:
    description: Like I(permissions), checked only when the platform is plain Kubernetes.
    type: list
    elements: dict
    default: []
    suboptions: *permission
  fail_on_unmet:
    description: Fail when a requirement is unmet. With C(false) the findings are only returned.
    type: bool
    default: true
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Check the cluster before installing anything
  datarobot_mlops.management_agent.cluster_requirements:
    permissions:
      - {verb: create, group: apps, resource: deployments, namespace: datarobot-mlops}
  register: cluster

- name: Only report, do not fail
  datarobot_mlops.management_agent.cluster_requirements:
    fail_on_unmet: false
  register: cluster
"""

RETURN = r"""
platform:
  description: C(kubernetes) or C(openshift).
  returned: always
  type: str
  sample: kubernetes
server_version:
  description: API server version as C(major.minor).
  returned: always
  type: str
  sample: "1.35"
openshift_version:
  description: OpenShift version from the ClusterVersion object, when the cluster serves one.
  returned: when platform is openshift and ClusterVersion is readable
  type: str
  sample: "4.14"
fitting_nodes:
  description: Names of schedulable nodes that meet the per-node minimums.
  returned: always
  type: list
  elements: str
nodes:
  description: Each node judged, with its capacity, its allocatable resources and what it falls short of.
  returned: always
  type: list
  elements: dict
  sample:
    - name: ip-10-0-1-23.ec2.internal
      capacity: {cpu: "2", memory: 7.6Gi, ephemeral_storage: 80.0Gi}
      allocatable: {cpu: "1.93", memory: 6.9Gi, ephemeral_storage: 71.0Gi}
      schedulable: true
      shortfalls: []
ingress_classes:
  description: Names of the IngressClass objects the cluster has.
  returned: always
  type: list
  elements: str
unmet:
  description: One line per unmet requirement, each with what to do about it.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._cluster_survey import survey
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._k8s_module import MlopsK8sModule
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import ReadOnlyCluster
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC

PERMISSION_SPEC = dict(
    verb=dict(type="str", required=True),
    resource=dict(type="str", required=True),
    group=dict(type="str", default=""),
    subresource=dict(type="str"),
    namespace=dict(type="str"),
)

ARGUMENT_SPEC = dict(
    AUTH_ARG_SPEC,
    platform=dict(type="str", choices=["auto", "kubernetes", "openshift"], default="auto"),
    min_node_cpu=dict(type="str", default="2"),
    min_node_memory=dict(type="str", default="6G"),
    min_node_ephemeral_storage=dict(type="str", default="38G"),
    node_selector=dict(type="str"),
    permissions=dict(type="list", elements="dict", default=[], options=PERMISSION_SPEC),
    openshift_permissions=dict(type="list", elements="dict", default=[], options=PERMISSION_SPEC),
    kubernetes_permissions=dict(type="list", elements="dict", default=[], options=PERMISSION_SPEC),
    fail_on_unmet=dict(type="bool", default=True),
)


def main() -> None:
    module = MlopsK8sModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.run(lambda: survey(ReadOnlyCluster.connect(module), module.params))


if __name__ == "__main__":
    main()
