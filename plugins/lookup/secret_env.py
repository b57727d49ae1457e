# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: secret_env
short_description: A secret from the controller's environment, as its value (NAME) or a file that holds it (NAME_FILE)
version_added: 0.1.0
description:
  - Returns the value of the environment variable named by the term, else the content of the file that C(<term>_FILE)
    names, without its final line break (other spaces are part of the secret), else an empty string.
  - This collection's AWX credential types hand secrets over as files (C(REGISTRY_PASSWORD_FILE)), so that a secret is
    never part of a job's environment, which ansible-runner writes to its artifacts.
  - The registry role reads C(REGISTRY_PASSWORD) with it, the prediction_environment and management_agent roles
    C(DATAROBOT_API_TOKEN) (the AWX DataRobot credential's C(DATAROBOT_API_TOKEN_FILE)).
  - It is the reader the collection's modules use for their own fallbacks (C(password) from C(REGISTRY_PASSWORD) or
    C(REGISTRY_PASSWORD_FILE); C(api_token) from C(DATAROBOT_API_TOKEN) or C(DATAROBOT_API_TOKEN_FILE)), run on the
    controller, so a role and a module read the same secret the same way, C(<term>) winning over C(<term>_FILE).
  - A C(<term>_FILE) that cannot be read fails the task, saying which file and what to do.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _terms:
    description: The variable's name, e.g. C(REGISTRY_PASSWORD).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Log in with the AWX registry credential's password
  ansible.builtin.set_fact:
    registry_password: "{{ lookup('datarobot_mlops.management_agent.secret_env', 'REGISTRY_PASSWORD') }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: The secret, or an empty string when neither variable is set.
  type: list
  elements: str
"""

from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._secret_env import secret_from_env


class LookupModule(LookupBase):
    """secret_env: NAME's value, else the content of the file NAME_FILE names, else ''."""

    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1:
            raise AnsibleLookupError(f"secret_env takes one variable name (e.g. REGISTRY_PASSWORD), not {len(terms)}.")
        try:
            return [secret_from_env(str(terms[0])) or ""]
        except MlopsError as exc:
            raise AnsibleLookupError(str(exc)) from exc
