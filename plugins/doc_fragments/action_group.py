# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    """The action_group attribute of the modules that share one group in meta/runtime.yml."""

    # Modules that take kubernetes.core's auth options.
    K8S = r"""
attributes:
  action_group:
    support: full
    description: Use C(group/datarobot_mlops.management_agent.management_agent) or
      C(group/datarobot_mlops.management_agent.k8s) in C(module_defaults) to set defaults for this module.
      C(group/datarobot_mlops.management_agent.k8s) also takes in the C(kubernetes.core.k8s) modules, so one set of
      auth defaults reaches both; C(group/kubernetes.core.k8s) alone does not reach this module.
    membership:
      - datarobot_mlops.management_agent.management_agent
      - datarobot_mlops.management_agent.k8s
"""

    # Modules that take the registry auth options.
    REGISTRY = r"""
attributes:
  action_group:
    support: full
    description: Use C(group/datarobot_mlops.management_agent.registry) in C(module_defaults) to set defaults for
      this module.
    membership:
      - datarobot_mlops.management_agent.registry
"""
