# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The one root of every error this collection raises, so that a module's main() catches one class."""

from __future__ import annotations


class MlopsError(Exception):
    """Something a user can act on went wrong; the message says what and what to check or change."""
