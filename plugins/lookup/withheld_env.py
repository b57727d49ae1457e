# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: withheld_env
short_description: The controller's environment variables a child process must not inherit, each set to empty
version_added: 0.1.0
description:
  - A module of another collection (such as C(kubernetes.core.helm)) starts its programs with the module's whole
    environment, which on a local connection is the environment of C(ansible-playbook) (or of the AWX job), often
    holding secrets of other tools (C(DATAROBOT_API_TOKEN), C(REGISTRY_PASSWORD), cloud keys, anything exported
    under any name). A task's C(environment) keyword cannot remove a variable, only set it.
  - This lookup returns a dictionary naming every variable of the controller's environment that the collection's
    allow-list for that kind of child leaves out, each mapped to an empty string, for a task's C(environment). It
    is the same allow-list the collection's own modules use when they start helm or a credential helper.
  - Kept are the variables every program needs (C(PATH), C(HOME), locale, temporary directory, proxies, TLS trust,
    C(XDG_*)), and those of the kind. For C(helm_module) (a module that runs helm) these are helm's (C(HELM_*),
    C(KUBECONFIG)), the cloud credential plugins' a kubeconfig can name (C(AWS_*), C(GOOGLE_*), C(CLOUDSDK_*),
    C(AZURE_*), C(AAD_*)), kubernetes.core's connection settings (C(K8S_AUTH_*)) and the module's Python's
    (C(PYTHON*), C(LD_LIBRARY_PATH), C(VIRTUAL_ENV)).
  - A variable is blanked whatever its name when its value holds one of the strings in O(withhold) (of 8 characters
    or more). The names in O(keep) are never blanked (the variables a play's own C(environment) sets on purpose).
  - A name that is no shell identifier (an exported bash function, C(BASH_FUNC_name%%)) cannot be set by a task's
    C(environment) and is left out of the dictionary.
  - It reads the controller's environment, which is what a module sees on a C(local) connection. On a remote host
    the module's environment is that host's login environment, which the controller's secrets do not reach.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _terms:
    description: The kind of child, one of C(helm_module), C(helm), C(credential_helper).
    type: list
    elements: str
    required: true
  withhold:
    description: Secret values of the run; a variable whose value contains one is blanked whatever its name.
    type: list
    elements: str
    default: []
  keep:
    description: Names never blanked.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Install a chart with kubernetes.core.helm; its helm gets no variable outside helm's allow-list
  kubernetes.core.helm:
    name: ingress-nginx
    chart_ref: ingress-nginx/ingress-nginx
    release_namespace: ingress-nginx
  environment: >-
    {{ lookup('datarobot_mlops.management_agent.withheld_env', 'helm_module',
              withhold=[mlops_datarobot_api_token], keep=mlops_cluster_env | default({}) | list) }}
"""

RETURN = r"""
_raw:
  description: One dictionary, variable name -> empty string, for a task's C(environment).
  type: list
  elements: dict
"""

from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import blanked_environment
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError


class LookupModule(LookupBase):
    """withheld_env: {name: ""} for each controller variable the kind's allow-list leaves out."""

    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, str]]:
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1:
            raise AnsibleLookupError("withheld_env takes one kind of child (helm_module, helm or credential_helper), "
                                     f"not {len(terms)}.")
        withhold = [str(value) for value in self.get_option("withhold") or [] if value]
        try:
            return [blanked_environment(str(terms[0]), withhold=withhold, keep=self.get_option("keep") or [])]
        except MlopsError as exc:
            raise AnsibleLookupError(str(exc)) from exc
