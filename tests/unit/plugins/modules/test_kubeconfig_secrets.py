"""Every Kubernetes module keeps a kubeconfig dictionary's secrets out of its output when Ansible's own argument
validation fails, before kubernetes.core could hide them: the whole JSON document main() prints is searched."""

from __future__ import annotations

import importlib
import json

import pytest

from fixtures.module_args import module_args

KEY_DATA, BEARER, EXEC_SECRET = "SUPERSECRETKEYDATA123", "BEARER-TOKEN-456", "AWS-SECRET-789"
KUBECONFIG = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],
              "users": [{"name": "u", "user": {"client-key-data": KEY_DATA}},
                        {"name": "t", "user": {"token": BEARER}},
                        {"name": "e", "user": {"exec": {"command": "aws", "env": [
                            {"name": "AWS_SECRET_ACCESS_KEY", "value": EXEC_SECRET}]}}}],
              "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
# Each module with arguments that fail Ansible's validation (an option it does not have).
CASES = {
    "agent_deployment": {"release_namespace": "ns", "chart_ref": "/c"},
    "cluster_requirements": {},
    "service_account_registry_secret": {"namespace": "ns", "service_account": "b", "registries": ["r.example"]},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_kubeconfig_dictionarys_secrets_stay_out_of_a_failed_validation(capsys, name):
    module = importlib.import_module(f"ansible_collections.datarobot_mlops.management_agent.plugins.modules.{name}")
    with module_args({**CASES[name], "kubeconfig": KUBECONFIG, "no_such_option": 1}), pytest.raises(SystemExit):
        module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["failed"] is True and "no_such_option" in result["msg"]
    for secret in (KEY_DATA, BEARER, EXEC_SECRET):
        assert secret not in out
    assert "https://127.0.0.1:9" in out  # the rest of it stays readable
