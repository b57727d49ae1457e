"""Every doc fragment with options pairs with one argument-spec constant that matches it option for option."""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._datarobot_client import (
    DATAROBOT_AUTH_ARGUMENT_SPEC,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import (
    REGISTRY_AUTH_ARGUMENT_SPEC,
)

PAIRS = {"registry_auth": REGISTRY_AUTH_ARGUMENT_SPEC, "datarobot_auth": DATAROBOT_AUTH_ARGUMENT_SPEC}
FRAGMENTS = "ansible_collections.datarobot_mlops.management_agent.plugins.doc_fragments."


def fragment_options(name: str, part: str = "DOCUMENTATION") -> dict:
    fragment = importlib.import_module(FRAGMENTS + name).ModuleDocFragment
    return yaml.safe_load(getattr(fragment, part)).get("options", {})


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_fragment_and_argument_spec_agree(name):
    options, spec = fragment_options(name), PAIRS[name]
    assert sorted(options) == sorted(spec)
    for option, documented in options.items():
        assert documented["type"] == spec[option]["type"], option
        assert documented.get("default") == spec[option].get("default"), option


@pytest.mark.parametrize(("name", "part"), [("action_group", "K8S"), ("action_group", "REGISTRY"),
                                            ("read_only", "DOCUMENTATION"), ("read_only", "TOKEN")])
def test_the_other_fragments_carry_no_options(name, part):
    assert fragment_options(name, part) == {}


@pytest.mark.parametrize(("spec", "secrets"), [(REGISTRY_AUTH_ARGUMENT_SPEC, {"password"}),
                                               (DATAROBOT_AUTH_ARGUMENT_SPEC, {"api_token"})])
def test_secrets_are_no_log(spec, secrets):
    assert {option for option, entry in spec.items() if entry.get("no_log")} == secrets
