"""Modules that take kubernetes.core's connection options keep them as they are: an option of ours under one of those
names would change what the option means to the Kubernetes client (service_account_registry_secret's registry login
name once replaced the API user name, so K8S_AUTH_USERNAME was ignored)."""

from __future__ import annotations

import importlib

import pytest

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.helm_args_common import HELM_AUTH_ARG_SPEC

MODULES = "ansible_collections.datarobot_mlops.management_agent.plugins.modules."
CASES = {"service_account_registry_secret": AUTH_ARG_SPEC, "cluster_requirements": AUTH_ARG_SPEC,
         "agent_deployment": HELM_AUTH_ARG_SPEC}


@pytest.mark.parametrize("name", sorted(CASES))
def test_connection_options_are_kubernetes_cores_own(name):
    spec = importlib.import_module(MODULES + name).ARGUMENT_SPEC
    auth = CASES[name]
    assert {option: spec.get(option) for option in auth} == dict(auth)
    aliases = {alias for option, entry in spec.items() if option not in auth for alias in entry.get("aliases", [])}
    assert not aliases & set(auth), f"{name} gives an alias the name of a connection option"


def test_the_registry_login_name_has_its_own_option():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._service_account_token import Renewal

    spec = importlib.import_module(MODULES + "service_account_registry_secret").ARGUMENT_SPEC
    assert spec["registry_username"]["default"] == "serviceaccount"
    params = {option: entry.get("default") for option, entry in spec.items()}
    params.update(namespace="ns", service_account="builder", registries=["registry.example:5000"])
    assert Renewal.from_params(params).registry_username == "serviceaccount"
