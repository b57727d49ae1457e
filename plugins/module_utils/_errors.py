# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The one root of every error this collection raises, so that a module's main() catches one class."""

from __future__ import annotations

from typing import Any, Callable, NoReturn


class MlopsError(Exception):
    """Something a user can act on went wrong; the message says what and what to check or change."""


def exit_with(module: Any, action: Callable[[], dict[str, Any]]) -> NoReturn:
    """Exit `module` with what `action` returns, or fail it with the message (and any `result`) of its MlopsError."""
    try:
        result = action()
    except MlopsError as exc:
        module.fail_json(msg=str(exc), **getattr(exc, "result", {}))
    module.exit_json(**result)
