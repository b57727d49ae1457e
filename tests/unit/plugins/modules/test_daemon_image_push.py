"""The daemon_image_push module: its documentation matches what it takes and returns, the password is no_log, and
its failures (Ansible's own validation, its own checks) never print the password."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import yaml
from fixtures.module_args import module_args

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._daemon_push import LocalPush
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_job import (
    sleep_until_result,
    start_job,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import (
    REGISTRY_AUTH_ARGUMENT_SPEC,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.modules import daemon_image_push

SECRET = "s3cr3t-Pa55word"
ARGS = {"name": "registry.example:5000/datarobot/mlops-management-agent", "tag": "9.2.0", "username": "ci",
        "password": SECRET}


def run_main(capsys, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    with module_args(args), pytest.raises(SystemExit):
        daemon_image_push.main()
    out = capsys.readouterr().out
    return out, json.loads(out)


def test_every_option_is_documented_with_the_type_and_default_it_is_parsed_with():
    documented = yaml.safe_load(daemon_image_push.DOCUMENTATION)["options"]
    assert set(documented) == set(daemon_image_push.ARGUMENT_SPEC)  # the auth options come from the fragment
    for option, spec in daemon_image_push.ARGUMENT_SPEC.items():
        assert documented[option]["type"] == spec["type"], option
        assert documented[option].get("default") == spec.get("default"), option
        assert documented[option].get("required", False) == spec.get("required", False), option
    assert "datarobot_mlops.management_agent.registry_auth" in \
        yaml.safe_load(daemon_image_push.DOCUMENTATION)["extends_documentation_fragment"]


def test_the_attributes_say_what_the_module_does():
    attributes = yaml.safe_load(daemon_image_push.DOCUMENTATION)["attributes"]
    assert {name: entry["support"] for name, entry in attributes.items()} == \
        {"check_mode": "full", "diff_mode": "full", "idempotent": "full", "async": "none"}


def test_every_value_it_returns_is_documented():
    documented = yaml.safe_load(daemon_image_push.RETURN)
    when = {name: entry["returned"] for name, entry in documented.items()}
    result = LocalPush("r/x:1", "r/x:1", "sha256:1", True, None).as_result(diff=False)
    assert set(result) - {"changed", "msg"} == {name for name, said in when.items() if "push ran" in said}
    # what a background start returns (the push's own values come with its result, from push_progress)
    started = start_job(None, 30, lambda _job_dir: {"changed": False}, lambda result: result)
    try:
        assert set(started) - {"changed"} == {name for name, said in when.items()
                                              if said == "when started in the background"}
    finally:
        sleep_until_result(started["job_dir"])(10)
        shutil.rmtree(started["job_dir"], ignore_errors=True)


def test_the_password_is_no_log():
    assert REGISTRY_AUTH_ARGUMENT_SPEC["password"]["no_log"] is True
    assert "password" not in daemon_image_push.ARGUMENT_SPEC  # only the fragment's, never a second one


@pytest.mark.parametrize("bad", [{"tag": "latest"}, {"tag": "-bad"}, {"name": "https://registry.example/x"},
                                 {"push_timeout": 0}, {"push_timeout": "soon"}, {"unknown": 1}, {"username": None}],
                         ids=["latest", "bad-tag", "scheme", "zero-timeout", "timeout-type", "unsupported",
                              "password-without-username"])
def test_a_failure_before_anything_is_asked_never_prints_the_password(capsys, bad):
    args = {key: value for key, value in {**ARGS, **bad}.items() if value is not None}
    out, result = run_main(capsys, args)
    assert result["failed"] is True and result["msg"]
    assert SECRET not in out


def test_without_the_docker_sdk_it_says_which_library_is_missing(capsys, monkeypatch):
    monkeypatch.setattr(daemon_image_push, "HAS_DOCKER", False)
    out, result = run_main(capsys, ARGS)
    assert result["failed"] is True
    assert "docker" in result["msg"] and "to push through a Docker API" in result["msg"]
    assert SECRET not in out
