# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: mask
short_description: Hide secrets in a message before a role shows it
version_added: 0.1.0
description:
  - Replaces every given secret in the text with C(********), longest first, the way the collection's modules
    mask what they return (one Masker for modules and roles).
  - Empty secrets are ignored, so an unset password does not garble the message.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _input:
    description: The text to show, typically a failed task's C(msg) or C(stderr).
    type: raw
    required: true
  secrets:
    description: The secret values known to the role (a password, a token and its base64 form).
    type: list
    elements: str
    default: []
  credential_words:
    description:
      - Also mask every word that starts like a credential (C(password=...), C(token...)), for messages that may
        carry secrets the role does not know.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Say why the login failed, without the password
  ansible.builtin.fail:
    msg: "{{ login.stderr | datarobot_mlops.management_agent.mask([mlops_registry_password]) }}"
"""

RETURN = r"""
_value:
  description: The text with the secrets masked.
  type: str
"""

from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import Masker


def mask(text: Any, secrets: Any = (), credential_words: bool = False) -> str:
    """The text as a role may show it: known secrets, and on request credential-like words, masked."""
    known = [secrets] if isinstance(secrets, str) else list(secrets or [])
    masker = Masker().add(*(str(secret) for secret in known if secret is not None))
    shown = "" if text is None else str(text)
    return masker.hide_credential_words(shown) if credential_words else masker.text(shown)


class FilterModule:
    """The collection's filters."""

    def filters(self) -> dict[str, Callable[..., str]]:
        return {"mask": mask}
