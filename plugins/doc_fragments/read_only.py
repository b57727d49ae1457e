# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    """Attributes of modules that only read: safe anywhere, never changed."""

    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    description: Reads only, so check mode runs the same checks.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
  idempotent:
    support: full
    description: Reads only; always returns C(changed=false).
"""

    # Modules that only fetch a registry push token: check mode fetches it too, so later tasks can check a push.
    TOKEN = r"""
attributes:
  check_mode:
    support: full
    description: Only reads; the token is fetched in check mode too, so later tasks can check a push.
  diff_mode:
    support: none
    description: Nothing is changed.
  idempotent:
    support: full
    description: Never changes anything (C(changed=false)).
"""
