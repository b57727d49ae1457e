"""agent_deployment keeps the secrets of `values` out of its output even when it fails before it could mask them:
Ansible's own argument validation, or a check of the module's own that runs before the values are composed. The
whole JSON document the module prints is searched. (A kubeconfig dictionary's secrets: test_kubeconfig_secrets.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fixtures.module_args import module_args
from ansible_collections.datarobot_mlops.management_agent.plugins.modules import agent_deployment

TOKEN, PASSWORD, EXTRA = "SUPERSECRET-API-TOKEN", "REGPASS-123", "--password=hunter22xyz"
VALUES = {"datarobot": {"apiToken": TOKEN, "dataRobotUrl": "https://app.datarobot.com"},
          "imageBuilder": {"registryPassword": PASSWORD, "extraArgs": [EXTRA]}}


def run_main(capsys, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What main() prints for `args` (it always exits), as text and as JSON."""
    with module_args(args), pytest.raises(SystemExit):
        agent_deployment.main()
    out = capsys.readouterr().out
    return out, json.loads(out)


@pytest.mark.parametrize("bad", [
    {"state": "bogus"},                                   # choices
    {"atomic": "maybe"},                                  # type conversion
    {"no_such_option": 1},                                # unsupported parameter
    {"chart_ref": None},                                  # required_if: state=present needs chart_ref
    {"release_namespace": None},                          # required
    {"wait_timeout": [1]},                                # the module's own check, before values are composed
], ids=["choices", "type", "unsupported", "required_if", "required", "wait_timeout"])
@pytest.mark.parametrize("option", ["values", "release_values"])
def test_secrets_of_values_stay_out_of_a_failed_validation(capsys, bad, option):
    args = {"release_namespace": "datarobot-mlops", "chart_ref": "/nonexistent", option: VALUES,
            "secret_value_paths": ["imageBuilder.extraArgs"], **bad}
    out, result = run_main(capsys, {key: value for key, value in args.items() if value is not None})
    assert result["failed"] is True
    for secret in (TOKEN, PASSWORD, EXTRA):
        assert secret not in out
    # Only the secrets are hidden: the rest of the values stays readable.
    assert result["invocation"]["module_args"][option]["datarobot"]["dataRobotUrl"] == "https://app.datarobot.com"


def test_a_secret_path_given_as_one_string_is_honoured_before_validation(capsys):
    out, result = run_main(capsys, {"release_namespace": "ns", "chart_ref": "/c", "values": VALUES,
                                    "secret_value_paths": "imageBuilder.extraArgs", "state": "bogus"})
    assert result["failed"] is True and EXTRA not in out


def test_secret_value_paths_that_cannot_be_read_hide_all_of_values(capsys):
    """A malformed secret_value_paths cannot say which values are secret: every value string is hidden."""
    out, result = run_main(capsys, {"release_namespace": "ns", "chart_ref": "/c", "values": VALUES,
                                    "secret_value_paths": {"not": "a list"}})
    assert result["failed"] is True
    for secret in (TOKEN, PASSWORD, EXTRA, "https://app.datarobot.com"):
        assert secret not in out


def test_a_valid_run_hides_only_the_secrets_so_values_and_diff_stay_readable(capsys):
    """`values` is not no_log (that would hide every string of it, in `values` and `diff` too): the module starts
    with exactly the secrets the Masker finds, and what it returns keeps the rest."""
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._k8s_module import MlopsK8sModule
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_module import (
        ReleaseArgumentsModule,
    )

    args = {"release_namespace": "datarobot-mlops", "state": "absent", "values": VALUES,
            "secret_value_paths": ["imageBuilder.extraArgs"]}
    with module_args(args), pytest.raises(SystemExit):
        module = MlopsK8sModule(argument_spec=agent_deployment.ARGUMENT_SPEC, supports_check_mode=True,
                                module_class=ReleaseArgumentsModule)
        assert {TOKEN, PASSWORD, EXTRA} <= module._module.no_log_values
        assert not {"https://app.datarobot.com", "datarobot-mlops", "bosun"} & module._module.no_log_values
        module.exit_json(changed=False, values={"datarobot": {"apiToken": "********",
                                                              "dataRobotUrl": "https://app.datarobot.com"}},
                         diff=[{"before": f"apiToken: {TOKEN}\n",
                                "after": "dataRobotUrl: https://app.datarobot.com\n"}])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["values"]["datarobot"]["dataRobotUrl"] == "https://app.datarobot.com"
    assert result["diff"][0]["after"] == "dataRobotUrl: https://app.datarobot.com\n" and TOKEN not in out


@pytest.mark.parametrize("values", [[{"apiToken": TOKEN}], f"apiToken {TOKEN}"], ids=["list", "unparsable"])
def test_values_that_are_no_dictionary_are_hidden_whole(capsys, values):
    out, result = run_main(capsys, {"release_namespace": "ns", "chart_ref": "/c", "values": values})
    assert result["failed"] is True and "dict" in result["msg"] and TOKEN not in out
