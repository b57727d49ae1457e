# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The ways reconciling a release fails, in one place so that every layer of it raises the same classes."""

from __future__ import annotations

from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError


class InvalidReleaseRequest(MlopsError, ValueError):
    """The arguments cannot work; the message says what to change."""


class ReleaseBusy(MlopsError):
    """Another helm operation holds the release (a pending-* status)."""


class ReleaseFailed(MlopsError):
    """The release could not be brought to the desired state; carries what was found and done."""

    def __init__(self, message: str, *, changed: bool, diagnostics: dict[str, Any] | None = None,
                 status: dict[str, Any] | None = None, drift: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.changed, self.diagnostics = changed, diagnostics
        self.status, self.drift = status or {}, drift or []
