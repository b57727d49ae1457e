"""How the roles and playbooks read the settings: each through its role's argument spec, booleans through `| bool`.

A setting the argument specs declare `type: bool` is tested through `| bool` wherever it is read. The spec validation
accepts `-e mlops_ingress_nginx_enabled=false` or an AWX survey's answer but leaves the value the string "false": raw
in a condition it is truthy on ansible-core 2.16 (the stage runs although it was turned off) and refused on 2.19
("Conditional result (True) was derived from value of type 'str'"). The scan reads every condition (`when:`, `that:`,
`changed_when:`, `failed_when:`, `until:`) and every `{{ }}` or `{% %}` expression in the roles' tasks, handlers,
vars, defaults and templates and in the playbooks, and wants each such setting followed by `| bool` (a
`| default(...)` may come between).

Every `mlops_*` setting a role reads is an option of its argument spec, so that a bad value is refused when the role
(and site.yml's first play) checks its settings, not when a task uses it; or it is another stage's setting the role
reads only as a fallback, with a default (FALLBACKS).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from ansible_cli import REPO

CONDITIONS = {"when", "that", "changed_when", "failed_when", "until"}


def _bool_settings() -> set[str]:
    names = set()
    for spec in REPO.glob("roles/*/meta/argument_specs.yml"):
        for entry_point in (yaml.safe_load(spec.read_text())["argument_specs"] or {}).values():
            names |= {name for name, option in (entry_point.get("options") or {}).items()
                      if option.get("type") == "bool"}
    return names


BOOLS = _bool_settings()
SOURCES = sorted({*REPO.glob("roles/*/tasks/**/*.yml"), *REPO.glob("roles/*/handlers/**/*.yml"),
                  *REPO.glob("roles/*/vars/**/*.yml"), *REPO.glob("roles/*/defaults/**/*.yml"),
                  *REPO.glob("roles/*/templates/**/*"), *REPO.glob("playbooks/**/*.yml"), REPO / "site.yml"})
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
# `| bool`, or `is defined` (asks whether it is set, not what it says), possibly after `| default(...)`
_TESTED = re.compile(r"\s*(?:\|\s*default\([^()]*\)\s*)?(?:\|\s*bool\b|is\s+(?:not\s+)?(?:un)?defined\b)")


def expressions(text: str) -> Iterator[str]:
    """The inside of each `{{ }}` and `{% %}` in a string (braces and quotes balanced, as Jinja's lexer reads them)."""
    start = 0
    while (match := re.compile(r"\{\{|\{%").search(text, start)) is not None:
        end, depth, position, quote = "}}" if match.group() == "{{" else "%}", 0, match.end(), None
        while position < len(text):
            char = text[position]
            if quote:
                quote = None if char == quote else quote
                position += 2 if char == "\\" else 1
                continue
            if char in "'\"":
                quote = char
            elif depth == 0 and text.startswith(end, position):
                break
            elif char in "{[(":
                depth += 1
            elif char in "}])":
                depth -= 1
            position += 1
        yield text[match.end():position]
        start = position + 2


def _jinja(node: Any, key: str | None = None) -> Iterator[str]:
    """Every Jinja expression in a loaded YAML document: conditions whole, other strings by their `{{ }}`."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _jinja(value, name if isinstance(name, str) else None)
    elif isinstance(node, list):
        for item in node:
            yield from _jinja(item, key)
    elif isinstance(node, str):
        if key in CONDITIONS and "{{" not in node:
            yield node
        else:
            yield from expressions(node)


def raw_uses(expression: str) -> set[str]:
    """The bool settings an expression reads without `| bool`; string literals are text, not reads."""
    code = _STRING.sub("''", expression)
    return {match.group(1) for match in re.finditer(r"(?<![\w.])(" + "|".join(sorted(BOOLS)) + r")\b", code)
            if not _TESTED.match(code, match.end())}


def scan(path: Path) -> list[tuple[str, str, str]]:
    text = path.read_text()
    if path.suffix in (".yml", ".yaml"):
        found = list(_jinja(yaml.safe_load(text)))
    else:
        found = list(expressions(re.sub(r"\{#.*?#\}", "", text, flags=re.S)))
    relative = str(path.relative_to(REPO))
    return [(relative, name, " ".join(expression.split()))
            for expression in found for name in sorted(raw_uses(expression))]


def test_the_specs_declare_bool_settings():
    assert {"mlops_ingress_nginx_enabled", "mlops_registry_insecure", "mlops_registry_validate_certs",
            "mlops_registry_gcp_manage_iam", "mlops_openshift_registry_expose_route"} <= BOOLS


@pytest.mark.parametrize("expression, raw", [
    ("not mlops_ingress_nginx_enabled", {"mlops_ingress_nginx_enabled"}),
    ("mlops_ingress_nginx_enabled", {"mlops_ingress_nginx_enabled"}),
    ("__foreign and not mlops_ingress_nginx_manage_existing", {"mlops_ingress_nginx_manage_existing"}),
    ("[host] if mlops_registry_insecure else []", {"mlops_registry_insecure"}),
    ("not mlops_registry_validate_certs", {"mlops_registry_validate_certs"}),
    ("mlops_management_agent_wait", {"mlops_management_agent_wait"}),
    ("not mlops_ingress_nginx_enabled | bool", set()),
    ("mlops_ingress_nginx_enabled | default(true) | bool and x", set()),
    ("mlops_pps_image_force|bool", set()),
    ("mlops_pps_image_async is defined", set()),
    ("'mlops_ingress_nginx_enabled is false' if x else ''", set()),
    ("_mlops.registry.insecure", set()),
])
def test_the_scan_reads_expressions(expression, raw):
    assert raw_uses(expression) == raw


def test_the_scan_finds_expressions_in_tasks():
    task = yaml.safe_load("""
- name: A task
  ansible.builtin.debug:
    msg: >-
      set mlops_ingress_nginx_enabled to true {{ {'a': {'b': mlops_registry_insecure}} }} {{ '}}' ~ x }}
      {% if mlops_registry_validate_certs %}{% endif %}
  when:
    - mlops_ingress_nginx_manage_existing
    - mlops_pps_image_force | bool
""")
    found = {name for expression in _jinja(task) for name in raw_uses(expression)}
    assert found == {"mlops_registry_insecure", "mlops_registry_validate_certs", "mlops_ingress_nginx_manage_existing"}


# Another stage's settings a role reads only as a fallback, each with `| default(...)`, and the play's environment.
# An AWX survey's answers (awx/surveys): not settings of a role, read only to know what was chosen at launch.
SURVEY_PREFIX = "mlops_survey_"
FALLBACKS = {
    "ingress_nginx": {"mlops_datarobot_api_token", "mlops_registry_password", "mlops_cluster_env"},
    "management_agent": {"mlops_ingress_nginx_class", "mlops_pps_image_version"},
    "preflight": {"mlops_management_agent_ingress_class", "mlops_ingress_nginx_class", "mlops_ingress_nginx_enabled"},
}


def _options(role: str) -> set[str]:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    return {name for entry_point in specs.values() for name in entry_point.get("options") or {}}


def settings_read(role: str) -> dict[str, str]:
    """Each `mlops_*` setting the role's tasks, vars, defaults and templates read (not merely ask `is defined`)."""
    found = {}
    for path in sorted(path for path in SOURCES if path.is_relative_to(REPO / "roles" / role) and path.is_file()):
        text = path.read_text()
        jinja = _jinja(yaml.safe_load(text)) if path.suffix in (".yml", ".yaml") else expressions(text)
        for expression in jinja:
            code = _STRING.sub("''", expression)
            for match in re.finditer(r"(?<![\w.])(mlops_[a-z0-9_]+)\b", code):
                if not re.match(r"\s*is\s+(?:not\s+)?(?:un)?defined\b", code[match.end():]):
                    found.setdefault(match.group(1), str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("role", sorted(path.parents[1].name for path in REPO.glob("roles/*/meta/argument_specs.yml")))
def test_the_settings_a_role_reads_are_in_its_spec(role):
    missing = {name: where for name, where in settings_read(role).items()
               if name not in _options(role) and name not in FALLBACKS.get(role, set())
               and not name.startswith(SURVEY_PREFIX)}
    assert missing == {}


def test_bool_settings_are_read_through_the_bool_filter():
    problems = [site for path in SOURCES if path.is_file() for site in scan(path)]
    assert problems == [], "\n".join(f"{path}: {name} without | bool in: {expression}"
                                     for path, name, expression in problems)
