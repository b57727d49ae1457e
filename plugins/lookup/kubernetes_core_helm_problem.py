# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: kubernetes_core_helm_problem
short_description: Say why the installed kubernetes.core cannot drive a helm, from what C(helm version) printed
version_added: 0.1.0
description:
  - The ingress stage installs the NGINX controller with C(kubernetes.core.helm). Releases of kubernetes.core
    before 6.6.0 run C(helm list --all), which helm 4 refuses with C(unknown flag --all).
  - This lookup reads the version of the kubernetes.core that the controller resolves (the first one on the
    collections path, the one a task would run) from its C(MANIFEST.json) and returns one sentence that says what
    is wrong and the ways out, or an empty string when the helm is no helm 4 or kubernetes.core is 6.6.0 or later.
  - An unreadable helm version gives an empty string; the helm_version_problem filter reports it.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _terms:
    description: What C(helm version --short) printed.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse helm 4 with a kubernetes.core that cannot drive it
  ansible.builtin.fail:
    msg: "{{ lookup('datarobot_mlops.management_agent.kubernetes_core_helm_problem', helm_version.stdout) }}"
  when: lookup('datarobot_mlops.management_agent.kubernetes_core_helm_problem', helm_version.stdout) | length > 0
"""

RETURN = r"""
_raw:
  description: Why kubernetes.core cannot drive this helm, or an empty string when it can.
  type: list
  elements: str
"""

import importlib
from typing import Any

from ansible.plugins.lookup import LookupBase

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_driver import (
    collection_version,
    helm4_driver_problem,
)


def _kubernetes_core_root() -> str | None:
    """Where the collection loader finds kubernetes.core (None: nowhere)."""
    try:
        package = importlib.import_module("ansible_collections.kubernetes.core")
    except ImportError:
        return None
    paths = list(getattr(package, "__path__", []))
    return str(paths[0]) if paths else None


class LookupModule(LookupBase):
    """kubernetes_core_helm_problem: one sentence per term, "" when kubernetes.core can drive that helm."""

    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        self.set_options(var_options=variables, direct=kwargs)
        root = _kubernetes_core_root()
        version = collection_version(root)
        return [helm4_driver_problem(str(term or ""), version, root) for term in terms]
