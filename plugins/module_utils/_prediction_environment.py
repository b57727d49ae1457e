# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A prediction environment as code: find by exact name, create, update, or delete, and say what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._datarobot_client import (
    DataRobotClient,
    DataRobotError,
)

AGENT_FORMATS = ("datarobot", "customModel")  # the only formats the management agent deploys
UPDATABLE = ("description", "supportedModelFormats", "isManagedByManagementAgent")
FIXED = ("platform",)  # assumption (docs): not changed in place; `recreate` replaces the environment


class InvalidEnvironmentRequest(MlopsError, ValueError):
    """The request cannot be carried out as asked; the message says what to change."""


@dataclass
class Desired:
    name: str
    platform: str
    description: str | None = None
    supported_model_formats: list[str] = field(default_factory=lambda: list(AGENT_FORMATS))
    managed_by_management_agent: bool = True

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "platform": self.platform,
                                "supportedModelFormats": self.supported_model_formats,
                                "isManagedByManagementAgent": self.managed_by_management_agent}
        if self.description is not None:
            body["description"] = self.description
        return body


@dataclass
class EnvironmentChange:
    changed: bool
    environment: dict[str, Any] | None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


def check_formats(formats: list[str]) -> None:
    unsupported = [f for f in formats if f not in AGENT_FORMATS]
    if unsupported:
        raise InvalidEnvironmentRequest(
            f"Model formats {unsupported} are not supported by the management agent, which deploys only "
            f"{list(AGENT_FORMATS)}: remove them from supported_model_formats.")
    if not formats:
        raise InvalidEnvironmentRequest(f"supported_model_formats is empty: give one or both of {list(AGENT_FORMATS)}.")


def _view(environment: dict[str, Any] | None) -> dict[str, Any]:
    """What the diff shows: the fields this module manages."""
    if not environment:
        return {}
    return {key: environment.get(key) for key in ("id", "name", "platform", "description", "supportedModelFormats",
                                                  "isManagedByManagementAgent")}


def _differences(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    changes = {}
    for key, wanted in desired.items():
        have = current.get(key)
        if key == "supportedModelFormats":
            same = sorted(have or []) == sorted(wanted)
        elif key == "description":
            same = (have or "") == (wanted or "")
        else:
            same = have == wanted
        if not same:
            changes[key] = wanted
    return changes


class PredictionEnvironments:
    def __init__(self, client: DataRobotClient, check_mode: bool = False) -> None:
        self.client, self.check_mode = client, check_mode

    def find(self, name: str | None, environment_id: str | None) -> dict[str, Any] | None:
        if environment_id:
            found = self.client.prediction_environment(environment_id)
            if found is None:
                raise InvalidEnvironmentRequest(f"No prediction environment has id {environment_id} at {self.client.base}: "
                                                "check the id, or leave it out to find or create the environment by name.")
            return found
        matches = [e for e in self.client.prediction_environments(search=name) if e.get("name") == name]
        if len(matches) > 1:
            ids = ", ".join(e["id"] for e in matches)
            raise InvalidEnvironmentRequest(f"{len(matches)} prediction environments are named {name!r} ({ids}): pick one "
                                            "with id, or delete the others.")
        return matches[0] if matches else None

    def present(self, desired: Desired, environment_id: str | None = None, recreate: bool = False) -> EnvironmentChange:
        check_formats(desired.supported_model_formats)
        current = self.find(desired.name, environment_id)
        body = desired.body()
        if current is None:
            created = None if self.check_mode else self.client.create_prediction_environment(body)
            return EnvironmentChange(True, created, {}, _view(created) or body)
        changes = _differences(current, body)
        fixed = {key: changes[key] for key in FIXED if key in changes}
        if fixed and not recreate:
            shown = ", ".join(f"{key}: {current.get(key)!r} -> {value!r}" for key, value in fixed.items())
            raise InvalidEnvironmentRequest(
                f"Prediction environment {current['id']} ({current['name']}) differs in what cannot be changed in "
                f"place ({shown}). Set recreate: true to replace it (deployments using it must be moved first), "
                "or change the desired value back.")
        if fixed:
            if self.check_mode:
                return EnvironmentChange(True, None, _view(current), body)
            self._delete(current)
            try:
                created = self.client.create_prediction_environment(body)
            except DataRobotError as exc:
                raise DataRobotError(f"Prediction environment {current['id']} ({current['name']}) was deleted to be "
                                     f"recreated, and creating its replacement failed: {exc} Run again once that is "
                                     "fixed: the environment is then created anew.", exc.status) from exc
            return EnvironmentChange(True, created, _view(current), _view(created))
        updatable = {key: value for key, value in changes.items() if key in UPDATABLE or key == "name"}
        if not updatable:
            return EnvironmentChange(False, current, _view(current), _view(current))
        if self.check_mode:
            return EnvironmentChange(True, current, _view(current), {**_view(current), **updatable})
        updated = self.client.update_prediction_environment(current["id"], updatable)
        return EnvironmentChange(True, updated, _view(current), _view(updated))

    def absent(self, name: str | None, environment_id: str | None = None) -> EnvironmentChange:
        try:
            current = self.find(name, environment_id)
        except InvalidEnvironmentRequest:
            if environment_id:
                return EnvironmentChange(False, None)  # already gone
            raise
        if current is None:
            return EnvironmentChange(False, None)
        if self.check_mode:
            return EnvironmentChange(True, None, _view(current), {})
        deleted = self._delete(current)
        return EnvironmentChange(deleted, None, _view(current), {})

    def _delete(self, current: dict[str, Any]) -> bool:
        try:
            return self.client.delete_prediction_environment(current["id"])
        except DataRobotError as exc:
            if exc.status == 422:
                raise InvalidEnvironmentRequest(f"Prediction environment {current['id']} ({current['name']}) is still used "
                                                "by a deployment: delete or move those deployments first.") from exc
            raise
