"""The prediction_environment module refuses an empty name without an id before it asks DataRobot anything (an AWX
survey left empty sends ""), with a message, never a traceback."""

from __future__ import annotations

import json

import pytest
from fixtures.module_args import module_args

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
