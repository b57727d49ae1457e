"""Each role's meta/argument_specs.yml says what its defaults/main.yml sets (ansible-doc is the users' view of the
defaults), and each stage's `checks` entry point validates the same options as its `main`, the one a stage playbook
and site.yml run before anything is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_cli import REPO

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
