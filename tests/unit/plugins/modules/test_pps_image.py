"""The pps_image module's documentation and argument spec: what it says matches what it takes and returns."""

from __future__ import annotations

import time

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_job import RESULT, start
from ansible_collections.datarobot_mlops.management_agent.plugins.modules import pps_image

REQUIRED = {"src": "/data/pps.tar.gz", "name": "registry.example.com/datarobot/pps", "tag": "9.2.0"}


def validated(**params) -> dict:
    result = ArgumentSpecValidator(pps_image.ARGUMENT_SPEC).validate({**REQUIRED, **params})
    assert not result.error_messages
    return result.validated_parameters


def test_every_option_is_documented_with_the_type_it_is_parsed_as():
    documented = yaml.safe_load(pps_image.DOCUMENTATION)["options"]
    for option, spec in pps_image.ARGUMENT_SPEC.items():
        assert documented[option]["type"] == spec["type"], option


def test_a_cache_under_the_home_directory_is_expanded_and_an_empty_one_stays_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert validated(cache="~/cache/pps_image.json")["cache"] == str(tmp_path / "cache" / "pps_image.json")
    assert validated(cache="")["cache"] == ""  # no cache at all
    assert validated()["cache"] is None  # the default file


def test_every_value_of_a_background_start_is_documented(tmp_path):
    job = tmp_path / "job"
    job.mkdir(mode=0o700)
    started = start(str(job), 30, lambda: {"changed": False}, lambda result: result)
    documented = yaml.safe_load(pps_image.RETURN)
    assert set(started) - {"changed"} <= set(documented), sorted(set(started) - set(documented))
    end = time.monotonic() + 20
    while not (job / RESULT).exists() and time.monotonic() < end:  # the worker ends before its directory goes
        time.sleep(0.05)
