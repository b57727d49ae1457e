"""The one timeout parser: whole seconds or a duration string, the same for modules and roles."""

from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._duration import (
    DurationError,
    go_duration,
    to_seconds,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError


@pytest.mark.parametrize("value, seconds", [
    (600, 600), (0, 0), ("600", 600), (" 600 ", 600), ("0", 0),
    ("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2h45m10s", 9910), ("9m60s", 600),
    ("1.5h", 5400), (".5m", 30), ("1.m", 60), ("0s", 0),
    ("1500ms", 2), ("500ms", 1), ("1ms", 1), ("2000000us", 2), ("2000000\u00b5s", 2), ("1ns", 1),
    ("5m0s", 300),  # helm's own default, as kubernetes.core's helm module writes it
])
def test_seconds_and_duration_strings_read_as_whole_seconds(value, seconds):
    assert to_seconds(value, "wait_timeout") == seconds


@pytest.mark.parametrize("value, why", [
    ("-5m", "cannot be negative"), (-1, "cannot be negative"), ("+5m", "no sign"),
    ("10", None), ("", "empty"), ("   ", "empty"),
    ("10 m", "cannot read"), ("10min", "cannot read"), ("1d", "cannot read"), ("m", "cannot read"),
    ("5m30", "needs a unit"), ("1.5", "needs a unit"), ("10M", "cannot read"), ("1h 30m", "cannot read"),
    (True, None), (None, None), (1.5, "a float"), ([300], "a list"),
])
def test_anything_else_is_refused_with_the_option_name_and_the_forms(value, why):
    if value == "10":
        assert to_seconds(value) == 10  # a string of digits is seconds, not an error
        return
    with pytest.raises(DurationError) as caught:
        to_seconds(value, "stuck_timeout")
    message = str(caught.value)
    assert message.startswith("stuck_timeout: ")
    assert "90s, 10m or 1h30m" in message and "whole seconds (600)" in message
    if why:
        assert why in message
    assert isinstance(caught.value, MlopsError)


def test_helm_gets_seconds_with_a_unit():
    assert go_duration(to_seconds("10m")) == "600s"
