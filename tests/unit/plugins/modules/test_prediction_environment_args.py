"""The prediction_environment module refuses an empty name without an id before it asks DataRobot anything (an AWX
survey left empty sends ""), and the environment's token for another endpoint than the environment's, with a
message, never a traceback."""

from __future__ import annotations

import json

import pytest
from fixtures.module_args import module_args

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _secret_env
from ansible_collections.datarobot_mlops.management_agent.plugins.modules import prediction_environment

TOKEN = "dr-token-canary-42"


@pytest.mark.parametrize("state", ["present", "absent"])
@pytest.mark.parametrize("empty", [{"name": ""}, {"name": "", "id": ""}], ids=["name", "name-and-id"])
def test_an_empty_name_without_an_id_is_refused_before_datarobot_is_asked(capsys, monkeypatch, state, empty):
    monkeypatch.setattr(prediction_environment, "DataRobotClient",
                        lambda *args, **kwargs: pytest.fail("DataRobot was asked"))
    args = {"endpoint": "https://datarobot.invalid", "api_token": TOKEN, "state": state, **empty}
    with module_args(args), pytest.raises(SystemExit):
        prediction_environment.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["failed"] is True
    assert result["msg"] == "Give the prediction environment's name, or its id: both are empty."
    assert TOKEN not in out and "Traceback" not in out


def run_with_environment(monkeypatch, args: dict, environ: dict, client) -> None:
    """The module as a task runs it with `args` and the job's `environ` (the AWX DataRobot credential's), with
    `client` in place of DataRobotClient."""
    monkeypatch.setattr(_secret_env, "_SUPPLIED", set())
    for name in ("DATAROBOT_ENDPOINT", "DATAROBOT_API_TOKEN", "DATAROBOT_API_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(prediction_environment, "DataRobotClient", client)
    with module_args({"name": "mlops", **args}), pytest.raises(SystemExit):
        prediction_environment.main()


def reached(monkeypatch, args: dict, environ: dict) -> tuple:
    """The endpoint and token the module gives DataRobot's client."""
    asked = []

    def client(*args, **kwargs):
        asked.append(args[:2])
        raise SystemExit(0)  # far enough
    run_with_environment(monkeypatch, args, environ, client)
    return asked[0] if asked else ()


@pytest.mark.parametrize("token_env", ["DATAROBOT_API_TOKEN", "DATAROBOT_API_TOKEN_FILE"])
def test_the_environments_token_does_not_follow_an_endpoint_to_another_host(capsys, monkeypatch, tmp_path, token_env):
    """A survey or a task names another endpoint than the credential's: its token is not sent there."""
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    environ = {"DATAROBOT_ENDPOINT": "https://app.datarobot.com",
               token_env: TOKEN if token_env == "DATAROBOT_API_TOKEN" else str(secret)}
    run_with_environment(monkeypatch, {"endpoint": "https://collector.example.net/api/v2"}, environ,
                         lambda *a, **k: pytest.fail(f"DataRobot was asked at {a[0]}"))
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["failed"] is True and TOKEN not in out and "Traceback" not in out
    assert "which is for the DataRobot at https://app.datarobot.com (DATAROBOT_ENDPOINT)" in result["msg"]
    assert "https://collector.example.net/api/v2, another host, port or scheme" in result["msg"]


@pytest.mark.parametrize("endpoint", [None, "https://app.datarobot.com/api/v2/", "https://APP.datarobot.com:443"])
def test_the_environments_token_goes_to_its_own_endpoint(monkeypatch, endpoint):
    args = {} if endpoint is None else {"endpoint": endpoint}
    environ = {"DATAROBOT_ENDPOINT": "https://app.datarobot.com", "DATAROBOT_API_TOKEN": TOKEN}
    assert reached(monkeypatch, args, environ) == (endpoint or "https://app.datarobot.com", TOKEN)


def test_a_token_the_task_passes_goes_to_the_endpoint_the_task_passes(monkeypatch):
    """Given together in the task (the inventory's, from Vault), the token and endpoint are the user's choice."""
    environ = {"DATAROBOT_ENDPOINT": "https://app.datarobot.com", "DATAROBOT_API_TOKEN": "the-credentials-token"}
    assert reached(monkeypatch, {"endpoint": "https://dr.example.net", "api_token": TOKEN}, environ) == \
        ("https://dr.example.net", TOKEN)
