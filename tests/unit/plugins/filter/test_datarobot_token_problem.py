"""The datarobot_token_problem filter: the roles keep the environment's DataRobot token for the environment's
endpoint, by the prediction_environment module's own rule."""

from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.filter.datarobot_token_problem import (
    FilterModule,
    datarobot_token_problem,
)

CREDENTIAL = "https://app.datarobot.com"


@pytest.mark.parametrize("endpoint", ["", None, CREDENTIAL, "https://app.datarobot.com/api/v2", "app.datarobot.com",
                                      "HTTPS://App.DataRobot.com:443/", "  https://app.datarobot.com  "])
def test_the_credentials_own_endpoint_or_none_may_have_its_token(endpoint):
    assert datarobot_token_problem(endpoint, CREDENTIAL) == ""


@pytest.mark.parametrize("endpoint", ["https://collector.example.net", "http://app.datarobot.com",
                                      "https://app.datarobot.com:8443", "https://app.datarobot.com.example.net",
                                      "collector.example.net/api/v2"])
def test_another_scheme_host_or_port_may_not(endpoint):
    problem = datarobot_token_problem(endpoint, CREDENTIAL)
    assert "which is for the DataRobot at https://app.datarobot.com (DATAROBOT_ENDPOINT)" in problem
    assert "the token is not sent there" in problem and "mlops_datarobot_api_token" in problem


@pytest.mark.parametrize("env_endpoint", ["", None, "  "])
def test_a_token_without_an_endpoint_in_the_environment_is_bound_to_none(env_endpoint):
    assert datarobot_token_problem("https://collector.example.net", env_endpoint) == ""


def test_the_filter_is_registered():
    assert FilterModule().filters()["datarobot_token_problem"] is datarobot_token_problem


def test_a_credential_without_an_endpoint_never_sends_its_token_to_the_surveys_endpoint():
    """An AWX credential made without an endpoint (its type's inputs cannot change once in use): whoever launches the
    job may not choose where its token goes."""
    problem = datarobot_token_problem("https://collector.example.net", "", "https://collector.example.net")
    assert "The AWX survey names the DataRobot endpoint https://collector.example.net" in problem
    assert "names no endpoint (DATAROBOT_ENDPOINT is empty)" in problem and "not sent" in problem
    # the inventory's endpoint (no survey answer), or a survey answer on the credential's own host
    assert datarobot_token_problem("https://dr.example.net", "", None) == ""
    assert datarobot_token_problem(CREDENTIAL + "/api/v2", CREDENTIAL, CREDENTIAL + "/api/v2") == ""
