# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: duration_seconds
short_description: Read a timeout (seconds or a duration string such as C(10m)) as whole seconds
version_added: 0.1.0
description:
  - The roles' C(*_timeout) variables accept whole seconds (C(600)) or a duration string as kubernetes.core's
    C(helm) module and helm's C(--timeout) take it (C(90s), C(10m), C(1h30m), C(1.5h); units C(h), C(m), C(s),
    C(ms), C(us), C(ns)). This filter turns either into whole seconds with the same parser the collection's
    modules use for their timeout options, so a role and a module read a value the same way.
  - A fraction of a second is rounded up; a negative, empty or unreadable value fails the task with a message
    that names the variable (when given) and the accepted forms.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _input:
    description: The timeout, an integer number of seconds or a duration string.
    type: raw
    required: true
  name:
    description: The variable's name, shown in the error message.
    type: str
    default: timeout
"""

EXAMPLES = r"""
- name: Wait for the route as long as the user asked (mlops_openshift_registry_route_timeout may be 120 or "2m")
  ansible.builtin.debug:
    msg: "{{ mlops_openshift_registry_route_timeout | datarobot_mlops.management_agent.duration_seconds }}"

- name: Hand helm a duration it reads
  ansible.builtin.debug:
    msg: "{{ mlops_ingress_nginx_wait_timeout | datarobot_mlops.management_agent.duration_seconds('wait') }}s"
"""

RETURN = r"""
_value:
  description: The timeout in whole seconds.
  type: int
"""

from typing import Any, Callable

from ansible.errors import AnsibleFilterError

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._duration import (
    DurationError,
    to_seconds,
)


class DurationFilterError(AnsibleFilterError, DurationError):
    """A role variable that is not a timeout, shown by Ansible as the task's failure message."""


def duration_seconds(value: Any, name: str = "timeout") -> int:
    """Whole seconds for a role's timeout variable, read exactly as the modules read their timeout options."""
    try:
        return to_seconds(value, name)
    except DurationError as exc:
        raise DurationFilterError(str(exc)) from exc


class FilterModule:
    """The collection's duration filter."""

    def filters(self) -> dict[str, Callable[..., int]]:
        return {"duration_seconds": duration_seconds}
