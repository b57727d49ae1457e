# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: helm_version_problem
short_description: Say why a helm cannot be used, from what C(helm version) printed
version_added: 0.1.0
description:
  - Reads the version from the output of C(helm version --short) (or C(helm version)) and compares it with the
    helm versions the collection supports, helm 3.8.0 or later 3.x and helm 4.x. The range is the one
    M(datarobot_mlops.management_agent.agent_deployment) itself checks, so the preflight role and the module
    accept the same helms.
  - Returns an empty string for a supported helm, else one sentence that says what is wrong and what to do.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _input:
    description: What C(helm version --short) printed.
    type: str
    required: true
  minimum:
    description:
      - A stricter floor a site asks for (C(3.14.0)); empty for the collection's own. It can only raise the floor.
    type: str
    default: ""
  option:
    description: The setting that picks the helm executable, named in the message.
    type: str
    default: mlops_helm_binary
"""

EXAMPLES = r"""
- name: Refuse an unsupported helm
  ansible.builtin.fail:
    msg: "{{ helm_version.stdout | datarobot_mlops.management_agent.helm_version_problem }}"
  when: helm_version.stdout | datarobot_mlops.management_agent.helm_version_problem | length > 0
"""

RETURN = r"""
_value:
  description: Why this helm cannot be used, or an empty string when it can.
  type: str
"""

from typing import Any, Callable

from ansible.errors import AnsibleFilterError

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    HelmError,
    parse_helm_version,
    unsupported,
)


def helm_version_problem(text: Any, minimum: str = "", option: str = "mlops_helm_binary") -> str:
    try:
        floor = parse_helm_version(str(minimum)) if str(minimum or "").strip() else None
    except HelmError as exc:
        raise AnsibleFilterError(f"helm_version_problem: minimum {minimum!r} is not a helm version (e.g. 3.14.0)") \
            from exc
    try:
        version = parse_helm_version(str(text or ""))
    except HelmError:
        return (f"Cannot read helm's version from {str(text or '').strip()!r}: is {option} a helm executable? "
                "Install a supported helm or point it at one.")
    return unsupported(version, option, floor) or ""


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"helm_version_problem": helm_version_problem}
