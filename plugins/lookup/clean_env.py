# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: clean_env
short_description: The argv wrapper that runs a command with only the environment variables it needs
version_added: 0.1.0
description:
  - A program started by C(ansible.builtin.command) inherits the whole environment of the module, which on a
    C(local) connection is the environment of C(ansible-playbook) (or of the AWX job), often holding secrets of other
    tools (C(DATAROBOT_API_TOKEN), C(REGISTRY_PASSWORD), cloud keys, anything exported under any name).
  - This lookup returns an argv prefix, C(/bin/sh -c SCRIPT clean_env PYTHON LAUNCHER NAMES... --), to put before
    the program's own argv. The shell finds a Python (the controller's, where a C(local) connection's command runs,
    else C(python3) on C(PATH)) and the launcher it runs starts the program with only the variables every program
    needs (C(PATH), C(HOME), C(USER), C(LOGNAME), C(SHELL), C(LANG), C(LANGUAGE), C(TZ), C(TMPDIR), C(TERM), proxies,
    C(SSL_CERT_FILE), C(SSL_CERT_DIR), C(LC_*), C(XDG_*)) and those named in the terms, nothing else. It is the
    collection's allow-list for child processes, the one its own modules use.
  - Only the names are on a command line; the values are read where the command runs, when it runs, and are never
    written into any process's argv (which every local user can read in C(/proc/<pid>/cmdline), and which a task
    shows in its result). A prefix in the terms is matched there too, against the variables the command is run with.
  - Use it with C(query) (or C(lookup) with C(wantlist=true)), which keeps the argv a list.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _terms:
    description:
      - Further variables the program needs, each a name (C(DOCKER_HOST)) or a prefix ending in C(*); C(CLOUDSDK_*)
        lets in every variable whose name starts with C(CLOUDSDK_).
      - A broad prefix can let in a secret (C(DOCKER_*) would let in a C(DOCKER_PASSWORD)); name the variables when
        the program has a known few.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: gcloud with its own variables and the common ones, nothing else of the run's environment
  ansible.builtin.command:
    argv: "{{ query('datarobot_mlops.management_agent.clean_env', 'CLOUDSDK_*', 'GOOGLE_*') + ['gcloud', 'info'] }}"
  changed_when: false
"""

RETURN = r"""
_raw:
  description: The argv to put before the program's, C(/bin/sh), C(-c), the script, C(clean_env), the Python, the
    launcher, the allowed names and prefixes, C(--).
  type: list
  elements: str
"""

from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import clean_env_argv
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError


class LookupModule(LookupBase):
    """clean_env: the argv prefix that runs the program after it with the allowed variables only (clean_env_argv)."""

    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        self.set_options(var_options=variables, direct=kwargs)
        try:
            return clean_env_argv(str(term) for term in terms)
        except MlopsError as exc:
            raise AnsibleLookupError(str(exc)) from exc
