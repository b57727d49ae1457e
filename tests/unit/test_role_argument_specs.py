"""Each role's meta/argument_specs.yml says what its defaults/main.yml sets (ansible-doc is the users' view of the
defaults), and each stage's `checks` entry point validates the same options as its `main`, the one a stage playbook
and site.yml run before anything is touched. A setting a module or collection refuses but for a few values has those
values as the spec's choices, so that site.yml's first play refuses another before the first stage changes anything."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_cli import REPO, run_playbook

ROLES = sorted(path.parents[1].name for path in REPO.glob("roles/*/meta/argument_specs.yml"))
# The stages whose playbook or site.yml runs the `checks` entry point first.
CHECKED = ["agent_images", "ingress_nginx", "management_agent", "openshift", "pps_image", "prediction_environment",
           "registry"]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def _specs(role: str) -> dict[str, Any]:
    return _yaml(REPO / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]


def _computed(value: Any) -> bool:
    """A template, or a list or dict holding one: its value is the role's to compute, not the spec's to state."""
    if isinstance(value, dict):
        return any(_computed(item) for item in value.values())
    if isinstance(value, list):
        return any(_computed(item) for item in value)
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@pytest.mark.parametrize("role", ROLES)
def test_the_spec_gives_the_defaults_the_role_sets(role):
    options = _specs(role)["main"].get("options") or {}
    defaults = _yaml(REPO / "roles" / role / "defaults" / "main.yml")
    problems = []
    for name, value in defaults.items():
        if name not in options:
            problems.append(f"{name} is set in defaults/main.yml but not in the spec")
        elif _computed(value):
            if "default" in options[name]:
                problems.append(f"{name}: the spec says {options[name]['default']!r}, defaults/main.yml computes it")
        elif options[name].get("default", "<none>") != value:
            problems.append(f"{name}: the spec says {options[name].get('default', '<none>')!r}, "
                            f"defaults/main.yml {value!r}")
    problems += [f"{name}: the spec says {option['default']!r}, defaults/main.yml sets nothing"
                 for name, option in options.items() if "default" in option and name not in defaults]
    assert problems == []


@pytest.mark.parametrize("role", CHECKED)
def test_the_checks_entry_point_validates_what_main_does(role):
    specs = _specs(role)
    assert "checks" in specs, f"{role} has no checks entry point"
    assert specs["checks"]["options"] == specs["main"]["options"]
    assert (REPO / "roles" / role / "tasks" / "checks.yml").is_file()
    main = _yaml(REPO / "roles" / role / "tasks" / "main.yml")
    assert {"name": "The stage's settings", "ansible.builtin.include_tasks": "checks.yml"} in main[:2], \
        "main.yml does not run the checks first"


def _constant(path: Path, name: str) -> Any:
    """The literal a module assigns to `name` at its top level (read, not imported)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(target, ast.Name) and target.id == name
                                                for target in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} assigns no {name}")


def _google_auth_kinds() -> list[str]:
    """google.cloud's choices for auth_kind (module_utils/gcp_utils.py, from the installed collection)."""
    for entry in sys.path:
        path = Path(entry) / "ansible_collections" / "google" / "cloud" / "plugins" / "module_utils" / "gcp_utils.py"
        if path.is_file():
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.keyword) and node.arg == "auth_kind" and isinstance(node.value, ast.Call):
                    return next(ast.literal_eval(option.value) for option in node.value.keywords
                                if option.arg == "choices")
    raise AssertionError("google.cloud (a dependency in galaxy.yml) is not on sys.path: run `make setup`")


def _validate(role: str, values: dict[str, Any]) -> list[str]:
    """What the role's argument spec validation (validate_argument_spec, as ansible runs it) says about values."""
    options = {name: {key: value for key, value in option.items() if key != "description"}
               for name, option in _specs(role)["main"]["options"].items()}
    return [str(error) for error in ArgumentSpecValidator(options).validate(values).errors]


def test_the_prediction_environment_spec_takes_what_the_module_does():
    options = _specs("prediction_environment")["main"]["options"]
    platforms = _constant(REPO / "plugins" / "modules" / "prediction_environment.py", "PLATFORMS")
    formats = _constant(REPO / "plugins" / "module_utils" / "_prediction_environment.py", "AGENT_FORMATS")
    # "" derives the platform from the cluster and the registry vendor
    assert sorted(options["mlops_prediction_environment_platform"]["choices"]) == sorted(["", *platforms])
    assert sorted(options["mlops_prediction_environment_formats"]["choices"]) == sorted(formats)
    registry = _specs("registry")["main"]["options"]["mlops_registry_vendor"]
    assert options["mlops_registry_vendor"]["choices"] == registry["choices"]
    assert options["mlops_registry_vendor"]["default"] == registry["default"]


def test_the_registry_spec_takes_the_auth_kinds_google_cloud_does():
    option = _specs("registry")["main"]["options"]["mlops_registry_gcp_auth_kind"]
    assert sorted(option["choices"]) == sorted(_google_auth_kinds())


@pytest.mark.parametrize("role, values, refused", [
    ("prediction_environment", {"mlops_prediction_environment_platform": "openshift"},
     "mlops_prediction_environment_platform"),
    ("prediction_environment", {"mlops_prediction_environment_formats": ["datarobot", "pmml"]},
     "mlops_prediction_environment_formats"),
    ("prediction_environment", {"mlops_registry_vendor": "Generic"}, "mlops_registry_vendor"),
    ("registry", {"mlops_registry_gcp_auth_kind": "service_account"}, "mlops_registry_gcp_auth_kind"),
])
def test_the_specs_refuse_what_the_modules_would(role, values, refused):
    errors = _validate(role, values)
    assert len(errors) == 1 and errors[0].startswith(f"value of {refused} must be one"), errors


@pytest.mark.parametrize("role, values", [
    ("prediction_environment", {"mlops_prediction_environment_platform": "openShift",
                                "mlops_prediction_environment_formats": ["customModel"],
                                "mlops_registry_vendor": "gcr"}),
    ("prediction_environment", {"mlops_prediction_environment_platform": ""}),
    ("registry", {"mlops_registry_gcp_auth_kind": "serviceaccount"}),
])
def test_the_specs_take_what_the_modules_do(role, values):
    assert _validate(role, values) == []


def test_site_refuses_a_missing_values_file_in_its_first_play(tmp_path):
    """Before the namespace and the API key secret are written (the file lookup in values.yml found it only then)."""
    present, missing = tmp_path / "present.yml", tmp_path / "missing.yml"
    present.write_text("managementAgent: {}\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"clusters": {"hosts": {"here": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        # no cluster: a stage that went on would fail, not change one
        "mlops_cluster_env": {"K8S_AUTH_KUBECONFIG": str(tmp_path / "no-kubeconfig")}}}}}))
    run = run_playbook("site.yml", inventory=str(inventory), tags="management_agent", extra_vars={
        "mlops_datarobot_endpoint": "https://app.datarobot.example", "mlops_datarobot_api_token": "token",
        "mlops_prediction_environment_id": "0123456789abcdef01234567",
        "mlops_outfacing_url_root": "https://mlops.example.com/deployments/", "mlops_management_agent_version": "9.2.0",
        "mlops_management_agent_values_files": [str(present), str(missing)]})
    assert run.returncode != 0
    assert len(run.document["plays"]) == 1, "the run went past site.yml's first play"
    message = run.failure()
    assert "mlops_management_agent_values_files" in message and str(missing) in message, run.stdout[-3000:]
    assert str(present) not in message


def test_the_prediction_environment_checks_refuse_no_format(tmp_path):
    """The spec's choices do not refuse an empty list; the module would, only when the stage runs."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "ansible.builtin.include_role": {"name": "datarobot_mlops.management_agent.prediction_environment",
                                         "tasks_from": "checks"}}]}]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    run = run_playbook(str(playbook), inventory=str(inventory), extra_vars={
        "mlops_datarobot_endpoint": "https://app.datarobot.example", "mlops_datarobot_api_token": "token",
        "mlops_prediction_environment_formats": []})
    assert run.returncode != 0
    assert run.failure().startswith("mlops_prediction_environment_formats is empty"), run.stdout[-3000:]
