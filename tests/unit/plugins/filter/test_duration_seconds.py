"""The duration_seconds filter: roles read their *_timeout variables with the modules' parser."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.datarobot_mlops.management_agent.plugins.filter.duration_seconds import (
    FilterModule,
    duration_seconds,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._duration import to_seconds
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError


@pytest.mark.parametrize("value", [120, "120", "2m", "1m60s", "90s", "1h", "1500ms"])
def test_the_filter_agrees_with_the_modules_parser(value):
    assert duration_seconds(value) == to_seconds(value)


def test_a_bad_value_fails_the_task_with_the_variable_named():
    with pytest.raises(AnsibleFilterError) as caught:
        duration_seconds("ten minutes", "mlops_ingress_nginx_wait_timeout")
    assert "mlops_ingress_nginx_wait_timeout: 'ten minutes' is not a timeout" in str(caught.value)
    assert isinstance(caught.value, MlopsError)
    assert FilterModule().filters()["duration_seconds"] is duration_seconds
