from __future__ import annotations

import copy

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._datarobot_client import DataRobotError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._prediction_environment import (
    Desired,
    InvalidEnvironmentRequest,
    PredictionEnvironments,
    check_formats,
)


class FakeClient:
    """The client's endpoints over a dict of environments (copies out, as JSON would); records every change."""

    base = "https://dr.example/api/v2/"

    def __init__(self, *environments: dict) -> None:
        self.environments = {e["id"]: copy.deepcopy(e) for e in environments}
        self.calls: list[tuple] = []
        self.delete_status: int | None = None
        self.create_status: int | None = None

    def prediction_environments(self, search=None):
        return [copy.deepcopy(e) for e in self.environments.values()
                if not search or search.lower() in e["name"].lower()]

    def prediction_environment(self, environment_id):
        return copy.deepcopy(self.environments.get(environment_id))

    def create_prediction_environment(self, body):
        self.calls.append(("create", body))
        if self.create_status:
            raise DataRobotError(f"DataRobot answered {self.create_status}.", self.create_status)
        created = {"id": f"id{len(self.environments) + 1}", **body}
        self.environments[created["id"]] = created
        return copy.deepcopy(created)

    def update_prediction_environment(self, environment_id, body):
        self.calls.append(("update", environment_id, body))
        self.environments[environment_id].update(body)
        return copy.deepcopy(self.environments[environment_id])

    def delete_prediction_environment(self, environment_id):
        self.calls.append(("delete", environment_id))
        if self.delete_status:
            raise DataRobotError("refused", self.delete_status)
        return self.environments.pop(environment_id, None) is not None


PROD = {"id": "id1", "name": "prod", "platform": "kubernetes", "description": "",
        "supportedModelFormats": ["customModel", "datarobot"], "isManagedByManagementAgent": True}


def test_body_carries_the_description_only_when_given():
    assert "description" not in Desired("n", "kubernetes").body()
    assert Desired("n", "kubernetes", "d").body()["description"] == "d"


@pytest.mark.parametrize("formats, message", [([], "is empty"), (["datarobot", "onnx"], "not supported")])
def test_only_the_agents_formats_are_accepted(formats, message):
    with pytest.raises(InvalidEnvironmentRequest, match=message):
        check_formats(formats)


def test_a_missing_environment_is_created_and_check_mode_creates_nothing():
    client = FakeClient()
    outcome = PredictionEnvironments(client, check_mode=True).present(Desired("prod", "kubernetes"))
    assert outcome.changed and outcome.environment is None and client.calls == []
    outcome = PredictionEnvironments(client).present(Desired("prod", "kubernetes"))
    assert outcome.changed and client.calls[0][0] == "create" and outcome.after["name"] == "prod"


def test_the_same_environment_is_left_alone_whatever_the_format_order():
    client = FakeClient(PROD, {**PROD, "id": "id9", "name": "prod-old"})  # search matches both; the name only one
    outcome = PredictionEnvironments(client).present(Desired("prod", "kubernetes", None, ["datarobot", "customModel"]))
    assert not outcome.changed and client.calls == []


def test_only_the_differing_fields_are_updated():
    client = FakeClient(PROD)
    outcome = PredictionEnvironments(client).present(Desired("prod", "kubernetes", "agent env", ["datarobot"]))
    assert client.calls == [("update", "id1", {"description": "agent env", "supportedModelFormats": ["datarobot"]})]
    assert outcome.before["description"] == "" and outcome.after["description"] == "agent env"


def test_a_platform_change_needs_recreate():
    client = FakeClient(PROD)
    with pytest.raises(InvalidEnvironmentRequest, match="platform: 'kubernetes' -> 'openshift'.*recreate: true"):
        PredictionEnvironments(client).present(Desired("prod", "openshift"))
    outcome = PredictionEnvironments(client).present(Desired("prod", "openshift"), recreate=True)
    assert [call[0] for call in client.calls] == ["delete", "create"]
    assert outcome.after["platform"] == "openshift"


def test_a_recreate_whose_create_fails_says_the_old_one_is_gone_and_the_next_run_creates_it():
    client = FakeClient(PROD)
    client.create_status = 422
    with pytest.raises(DataRobotError, match=r"id1 \(prod\) was deleted to be recreated, and creating its replacement "
                                             r"failed: DataRobot answered 422\. Run again") as raised:
        PredictionEnvironments(client).present(Desired("prod", "openshift"), recreate=True)
    assert raised.value.status == 422
    client.create_status = None
    outcome = PredictionEnvironments(client).present(Desired("prod", "openshift"), recreate=True)
    assert outcome.changed and client.calls[-1][0] == "create" and outcome.after["platform"] == "openshift"


def test_a_recreate_of_an_environment_in_use_says_so_and_keeps_it():
    client = FakeClient(PROD)
    client.delete_status = 422
    with pytest.raises(InvalidEnvironmentRequest, match=r"id1 \(prod\) is still used by a deployment"):
        PredictionEnvironments(client).present(Desired("prod", "openshift"), recreate=True)
    assert [call[0] for call in client.calls] == ["delete"] and "id1" in client.environments


def test_two_environments_with_the_name_are_refused():
    client = FakeClient(PROD, {**PROD, "id": "id2"})
    with pytest.raises(InvalidEnvironmentRequest, match="2 prediction environments are named 'prod' \\(id1, id2\\)"):
        PredictionEnvironments(client).present(Desired("prod", "kubernetes"))


def test_an_unknown_id_is_an_error_when_present_and_nothing_when_absent():
    client = FakeClient()
    with pytest.raises(InvalidEnvironmentRequest, match="No prediction environment has id nope"):
        PredictionEnvironments(client).present(Desired("prod", "kubernetes"), environment_id="nope")
    assert not PredictionEnvironments(client).absent(None, "nope").changed


def test_absent_deletes_and_check_mode_only_reports():
    client = FakeClient(PROD)
    assert PredictionEnvironments(client, check_mode=True).absent("prod").changed and client.calls == []
    outcome = PredictionEnvironments(client).absent("prod")
    assert outcome.changed and outcome.after == {} and client.calls == [("delete", "id1")]
    assert not PredictionEnvironments(client).absent("prod").changed


def test_an_environment_in_use_says_to_move_the_deployments():
    client = FakeClient(PROD)
    client.delete_status = 422
    with pytest.raises(InvalidEnvironmentRequest, match="still used by a deployment"):
        PredictionEnvironments(client).absent("prod")
