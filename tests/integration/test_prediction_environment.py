"""prediction_environment against the rig's fake DataRobot API, and the fake against DataRobot's own client."""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from ansible_cli import ansible_env, run_module, run_playbook

MODULE = "datarobot_mlops.management_agent.prediction_environment"


@pytest.fixture
def api(rig):
    """Calls to the fake's test hooks (faults, in-use marks); faults are cleared afterwards."""
    base = rig["DATAROBOT_ENDPOINT"].rsplit("/api/v2", 1)[0]

    def hook(path: str, body: dict | None = None) -> None:
        requests.post(f"{base}/_fake/{path}", json=body or {}, verify=rig["DATAROBOT_CA_PATH"], timeout=10)

    yield hook
    hook("reset")


@pytest.fixture
def official(rig, monkeypatch):
    """DataRobot's own Python client, configured against the fake."""
    import datarobot as dr

    # requests lets REQUESTS_CA_BUNDLE (set on our machines) win over the client's ssl_verify path.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", rig["DATAROBOT_CA_PATH"])
    dr.Client(endpoint=rig["DATAROBOT_ENDPOINT"], token=rig["DATAROBOT_API_TOKEN"], ssl_verify=rig["DATAROBOT_CA_PATH"])
    return dr


def unique(prefix: str = "env") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_create_reuse_and_delete(rig):
    name = unique()
    created = run_module(MODULE, {"name": name, "platform": "aws"}, diff=True)
    assert created.result["changed"] is True and len(created.result["id"]) == 24
    assert created.result["diff"]["before"] == {}
    environment = created.result["prediction_environment"]
    assert environment["isManagedByManagementAgent"] is True
    assert sorted(environment["supportedModelFormats"]) == ["customModel", "datarobot"]
    again = run_module(MODULE, {"name": name, "platform": "aws"})
    assert again.result["changed"] is False and again.result["id"] == created.result["id"]
    gone = run_module(MODULE, {"name": name, "state": "absent"})
    assert gone.result["changed"] is True
    assert run_module(MODULE, {"name": name, "state": "absent"}).result["changed"] is False


def test_check_mode_creates_nothing(rig, official):
    name = unique()
    checked = run_module(MODULE, {"name": name}, check=True, diff=True)
    assert checked.result["changed"] is True and checked.result["id"] == ""
    assert checked.result["diff"]["after"]["name"] == name
    assert not [e for e in official.PredictionEnvironment.list() if e.name == name]


def test_description_is_updated_in_place_and_platform_needs_recreate(rig):
    name = unique()
    first = run_module(MODULE, {"name": name, "description": "one"}).result["id"]
    updated = run_module(MODULE, {"name": name, "description": "two"}, diff=True)
    assert updated.result["changed"] and updated.result["id"] == first
    assert updated.result["diff"]["before"]["description"] == "one"
    assert updated.result["diff"]["after"]["description"] == "two"
    refused = run_module(MODULE, {"name": name, "description": "two", "platform": "gcp"})
    assert refused.failed
    assert "differs in what cannot be changed in place (platform: 'other' -> 'gcp')" in refused.result["msg"]
    replaced = run_module(MODULE, {"name": name, "description": "two", "platform": "gcp", "recreate": True})
    assert replaced.result["changed"] and replaced.result["id"] != first
    assert replaced.result["prediction_environment"]["platform"] == "gcp"


def test_duplicate_names_fail_and_list_the_ids(rig, official):
    name = unique("twin")
    ids = sorted(official.PredictionEnvironment.create(name=name, platform="other").id for _twin in range(2))
    outcome = run_module(MODULE, {"name": name})
    assert outcome.failed
    assert f"2 prediction environments are named '{name}'" in outcome.result["msg"]
    assert all(environment_id in outcome.result["msg"] for environment_id in ids)
    picked = run_module(MODULE, {"id": ids[0]})
    assert picked.result["changed"] is True and picked.result["id"] == ids[0]  # marked as agent-managed


def test_environment_made_by_the_official_client_is_found(rig, official):
    name = unique("sdk")
    made = official.PredictionEnvironment.create(
        name=name, platform="openShift", supported_model_formats=["datarobot", "customModel"],
        is_managed_by_management_agent=True)
    found = run_module(MODULE, {"name": name, "platform": "openShift"})
    assert found.result["changed"] is False and found.result["id"] == made.id


def test_official_client_round_trip(rig, official):
    name = unique("sdk-crud")
    made = official.PredictionEnvironment.create(name=name, platform="aws", description="made by the SDK",
                                                 supported_model_formats=["datarobot"])
    assert len(made.id) == 24 and made.platform == "aws"
    fetched = official.PredictionEnvironment.get(made.id)
    assert fetched.name == name and fetched.supported_model_formats == ["datarobot"]
    assert made.id in [e.id for e in official.PredictionEnvironment.list()]
    fetched.delete()
    with pytest.raises(official.errors.ClientError) as gone:
        official.PredictionEnvironment.get(made.id)
    assert gone.value.status_code == 404


def test_the_fake_uses_the_official_enums(rig, official):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "rig"))
    import fake_datarobot

    assert set(fake_datarobot.PLATFORMS) == set(official.enums.PredictionEnvironmentPlatform.ALL)
    assert set(fake_datarobot.FORMATS) == set(official.enums.PredictionEnvironmentModelFormats.ALL)
    with pytest.raises(official.errors.ClientError) as refused:
        official.PredictionEnvironment.create(name=unique(), platform="mainframe")
    assert refused.value.status_code == 422


def test_pagination_over_more_than_one_page(rig, official):
    prefix = unique("pager")
    target = official.PredictionEnvironment.create(name=prefix, platform="other")
    for index in range(105):
        official.PredictionEnvironment.create(name=f"{prefix}-{index}", platform="other")
    found = run_module(MODULE, {"name": prefix})
    assert found.result["id"] == target.id  # oldest: on the second page of the search


def test_bad_token_names_the_endpoint_not_the_token(rig):
    outcome = run_module(MODULE, {"name": unique(), "api_token": "not-the-token-at-all"})
    assert outcome.failed
    assert f"DataRobot at {rig['DATAROBOT_ENDPOINT']}/ answered 401" in outcome.result["msg"]
    assert "check api_token (DATAROBOT_API_TOKEN)" in outcome.result["msg"]
    assert "not-the-token-at-all" not in outcome.stdout + outcome.stderr


def test_unsupported_format_is_refused_before_any_call(rig):
    outcome = run_module(MODULE, {"name": unique(), "supported_model_formats": ["datarobot", "externalModel"],
                                  "endpoint": "https://127.0.0.1:9"})
    assert outcome.failed
    assert "Model formats ['externalModel'] are not supported by the management agent" in outcome.result["msg"]


def test_5xx_bursts_are_retried(rig, api):
    api("faults", {"status": 503, "count": 2})
    outcome = run_module(MODULE, {"name": unique()})
    assert not outcome.failed, outcome.result.get("msg")


def test_html_error_pages_and_persistent_5xx_fail_clearly(rig, api):
    api("faults", {"html": True, "count": 20})
    outcome = run_module(MODULE, {"name": unique()})
    assert outcome.failed and "answered 502 to GET predictionEnvironments/ after 4 attempts" in outcome.result["msg"]
    assert "non-JSON answer (text/html)" in outcome.result["msg"]


def test_slow_answers_time_out_clearly(rig, api):
    api("faults", {"delay": 3, "count": 4})
    outcome = run_module(MODULE, {"name": unique(), "timeout": 1})
    assert outcome.failed and "Cannot reach DataRobot at" in outcome.result["msg"]


def test_an_environment_in_use_is_not_deleted(rig, api):
    name = unique()
    environment_id = run_module(MODULE, {"name": name}).result["id"]
    api(f"in-use/{environment_id}")
    outcome = run_module(MODULE, {"name": name, "state": "absent"})
    assert outcome.failed and "is still used by a deployment" in outcome.result["msg"]


def test_the_role_publishes_the_id_and_skips_when_given_one(rig):
    name = unique("role")
    run = run_playbook("playbooks/prediction_environment.yml", extra_vars={"mlops_prediction_environment_name": name})
    assert run.returncode == 0, run.failure()
    published = run.task("Publish the id for the chart's datarobot.predictionEnvId")["ansible_facts"]
    assert len(published["__prediction_environment_published"]["prediction_environment_id"]) == 24
    again = run_playbook("playbooks/prediction_environment.yml", extra_vars={"mlops_prediction_environment_name": name})
    assert again.changed == 0
    given = run_playbook("playbooks/prediction_environment.yml", extra_vars={"mlops_prediction_environment_id": "abc"},
                         env=ansible_env(without=("DATAROBOT_API_TOKEN",)))
    assert given.task("Create or reuse the prediction environment").get("skipped") is True
    assert given.task("Publish the id for the chart's datarobot.predictionEnvId")["ansible_facts"][
        "__prediction_environment_published"]["prediction_environment_id"] == "abc"


def test_the_role_deletes_by_the_given_id_and_publishes_none(rig, official):
    """state absent with an id deletes that environment (found by id, whatever the name says) and publishes no id;
    a second run finds nothing to delete."""
    name = unique("role-gone")
    made = official.PredictionEnvironment.create(name=name, platform="other")
    extra = {"mlops_prediction_environment_id": made.id, "mlops_prediction_environment_state": "absent",
             "mlops_prediction_environment_name": unique("other-name")}
    gone = run_playbook("playbooks/prediction_environment.yml", extra_vars=extra)
    assert gone.returncode == 0, gone.failure()
    assert gone.task("Create or reuse the prediction environment")["changed"] is True
    assert made.id not in [environment.id for environment in official.PredictionEnvironment.list()]
    assert gone.task("Publish the id for the chart's datarobot.predictionEnvId")["ansible_facts"][
        "__prediction_environment_published"]["prediction_environment_id"] == ""
    again = run_playbook("playbooks/prediction_environment.yml", extra_vars=extra)
    assert again.returncode == 0 and again.changed == 0, again.failure()
