"""The helm_version_problem filter: the preflight role accepts exactly the helms agent_deployment accepts."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.datarobot_mlops.management_agent.plugins.filter.helm_version_problem import (
    FilterModule,
    helm_version_problem,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import Helm, HelmError


def module_accepts(short: str) -> bool:
    try:
        Helm("helm", lambda argv, stdin=None: (0, short, "")).check_version()
    except HelmError:
        return False
    return True


@pytest.mark.parametrize("short", ["v3.7.2+g1234", "v3.8.0+gabc", "v3.22.0+g144ca65", "v4.0.0+g1", "v4.3.1+gdeadbee",
                                   "v5.0.0", "v2.17.0+ga690bad"])
def test_the_role_and_the_module_agree_on_every_version(short):
    assert (helm_version_problem(short) == "") == module_accepts(short)


def test_helm_4_passes_and_helm_5_is_named_with_the_variable():
    assert helm_version_problem("v4.3.1+g5b8b1d6") == ""
    problem = helm_version_problem("v5.0.0+g1")
    assert problem == ("The collection supports helm 3.8.0 or later 3.x, or helm 4.x, current version is 5.0.0: "
                       "install a supported helm or point mlops_helm_binary at one.")


def test_a_site_floor_raises_the_collections_own_only():
    expected = "The collection requires helm >= 3.14.0, current version is 3.13.0: upgrade helm."
    assert helm_version_problem("v3.13.0", minimum="3.14.0") == expected
    assert helm_version_problem("v4.0.0", minimum="3.14.0") == ""
    assert "supports helm 3.8.0" in helm_version_problem("v3.7.0", minimum="3.0.0")
    assert helm_version_problem("v3.8.0", minimum="") == ""


def test_unreadable_output_and_a_bad_floor():
    assert "Cannot read helm's version from 'garbage': is mlops_helm_binary a helm executable?" \
        in helm_version_problem("garbage")
    with pytest.raises(AnsibleFilterError, match="minimum 'three' is not a helm version"):
        helm_version_problem("v3.14.0", minimum="three")


def test_the_filter_is_registered():
    assert FilterModule().filters()["helm_version_problem"] is helm_version_problem
