"""The AWX definitions in awx/ hold up against the real awx.awx modules, AWX's own rules and our roles.

No AWX server runs here, so this is what stands in for one:

- Each definition goes through the argument spec that the installed awx.awx module builds in its main() (taken by
  intercepting the module's ControllerAPIModule, so it is the module's own spec, not a copy) and Ansible's
  ArgumentSpecValidator: unknown options, wrong types and bad choices fail.
- Surveys and credential types are checked against the rules AWX's API applies when they are saved or used
  (re-stated below from AWX's job template survey view, credential type fields and serializer).
- Every survey variable, injected variable and template extra var must be one the collection really reads.
- awx/configure.yml runs for real, against a stand-in awx.awx whose modules check their parameters with those same
  specs (AnsibleModule) and record them instead of calling a server; the recorded objects are then checked by the
  rules above. What this cannot show (name lookups, permissions, server-side defaults) is listed in awx/README.md.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.utils.vars import isidentifier
from ansible.vars.reserved import is_reserved_name
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ansible_cli import BIN, REPO, ansible_env

AWX = REPO / "awx"
META_KEYS = {"survey", "survey_variables", "stage"}  # ours, consumed by configure.yml (see awx/job_templates.yml)
# Imported by site.yml but not a stage of the procedure, so without a template of its own.
NOT_STAGES = {"playbooks/summary.yml"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def credential_types() -> list[dict]:
    return _yaml(AWX / "credential_types.yml")["credential_types"]


def credentials() -> list[dict]:
    return _yaml(AWX / "credentials.yml")["awx_credentials"]


def job_template_data() -> dict:
    return _yaml(AWX / "job_templates.yml")


def job_templates() -> list[dict]:
    """Each template merged over the defaults, as configure.yml does (`combine(recursive=true)`)."""
    data = job_template_data()
    return [_merge(data["job_template_defaults"], template) for template in data["job_templates"]]


def _merge(low: dict, high: dict) -> dict:
    merged = copy.deepcopy(low)
    for key, value in high.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else copy.deepcopy(value)
    return merged


def survey(name: str) -> dict:
    return json.loads((AWX / "surveys" / f"{name}.json").read_text())


def surveys() -> list[str]:
    return sorted(path.stem for path in (AWX / "surveys").glob("*.json"))


def inventories() -> list[dict]:
    return _yaml(AWX / "inventories.yml")["inventories"]


def survey_for(template: dict) -> dict | None:
    """The survey_spec configure.yml sends for a template: the survey, narrowed to survey_variables."""
    if "survey" not in template:
        return None
    spec = survey(template["survey"])
    wanted = template.get("survey_variables", [question["variable"] for question in spec["spec"]])
    return dict(spec, spec=[question for question in spec["spec"] if question["variable"] in wanted])


# ---------------------------------------------------------------------------------------------------------------
# The awx.awx modules' own argument specs


class _Captured(Exception):
    pass


@lru_cache(maxsize=None)
def awx_spec(module: str) -> dict:
    """The complete argument spec awx.awx.<module> validates its parameters with (its own + the connection ones)."""
    loaded = importlib.import_module(f"ansible_collections.awx.awx.plugins.modules.{module}")
    captured: dict[str, Any] = {}

    def intercept(argument_spec=None, **_kwargs):
        captured.update(argument_spec)
        raise _Captured()

    real = loaded.ControllerAPIModule
    loaded.ControllerAPIModule = intercept
    try:
        loaded.main()
    except _Captured:
        pass
    finally:
        loaded.ControllerAPIModule = real
    assert captured, f"awx.awx.{module}'s main() built no argument spec"
    spec = copy.deepcopy(real.AUTH_ARGSPEC)
    spec.update(captured)
    return spec


def spec_errors(module: str, params: dict) -> list[str]:
    return ArgumentSpecValidator(awx_spec(module)).validate(params).error_messages


def option_names(module: str) -> set[str]:
    names = set()
    for name, option in awx_spec(module).items():
        names.add(name)
        names.update(option.get("aliases", []))
    return names


def test_the_specs_come_from_the_installed_modules():
    assert {"survey_spec", "survey_enabled", "extra_vars", "ask_inventory_on_launch"} <= set(awx_spec("job_template"))
    assert awx_spec("credential_type")["kind"]["choices"] == ["ssh", "vault", "net", "scm", "cloud", "insights"]
    assert "source_path" in awx_spec("inventory_source")


# ---------------------------------------------------------------------------------------------------------------
# What the collection reads


def _role_specs() -> dict[str, dict]:
    """option -> its spec, over every role's meta/argument_specs.yml (all entry points)."""
    options: dict[str, dict] = {}
    for path in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        for entry in (_yaml(path).get("argument_specs") or {}).values():
            options.update(entry.get("options") or {})
    return options


def _role_defaults() -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for path in sorted(REPO.glob("roles/*/defaults/main.yml")):
        defaults.update(_yaml(path) or {})
    return defaults


_BARE_EXPRESSION_KEYS = {"when", "that", "changed_when", "failed_when", "until"}


def _expressions(node: Any, key: str = "") -> list[str]:
    if isinstance(node, dict):
        return [text for k, value in node.items() for text in _expressions(value, str(k))]
    if isinstance(node, list):
        return [text for value in node for text in _expressions(value, key)]
    if isinstance(node, str) and ("{{" in node or "{%" in node or key in _BARE_EXPRESSION_KEYS):
        return [node]
    return []


@lru_cache(maxsize=None)
def _templates_of_the_collection() -> str:
    """Every Jinja expression in the roles' defaults/vars/tasks/handlers, the playbooks and site.yml."""
    paths = [REPO / "site.yml", *REPO.glob("playbooks/*.yml")]
    for part in ("defaults", "vars", "tasks", "handlers"):
        paths += REPO.glob(f"roles/*/{part}/**/*.yml")
    return "\n".join(text for path in sorted(paths) for text in _expressions(_yaml(path)))


def _referenced(variable: str, text: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(variable)}\b", text) is not None


def read_by_the_collection(variable: str) -> bool:
    return variable in _role_specs() or _referenced(variable, _templates_of_the_collection())


def options_fed_by(variable: str) -> dict[str, dict]:
    """The role options whose default is computed from `variable` (mlops_pps_image_version ->
    mlops_management_agent_version)."""
    specs = _role_specs()
    fed = {variable: specs[variable]} if variable in specs else {}
    for option, default in _role_defaults().items():
        if isinstance(default, str) and _referenced(variable, default) and option in specs:
            fed[option] = specs[option]
    return fed


@lru_cache(maxsize=None)
def _environment_readers() -> str:
    """Source that reads environment variables: ours, kubernetes.core's connection options, the kubernetes client."""
    site = Path(yaml.__file__).parents[1]
    paths = [*REPO.glob("plugins/**/*.py"), *REPO.glob("roles/**/*.yml"), *REPO.glob("inventories/**/*.yml"),
             *(site / "ansible_collections/kubernetes/core/plugins/module_utils").glob("*.py"),
             site / "kubernetes/config/kube_config.py"]
    return "\n".join(path.read_text() for path in sorted(paths))


# module_utils/_secret_env.py reads NAME_FILE beside NAME: for the modules' fallbacks (secret_fallback, ["NAME"]) and
# for the roles (lookup('datarobot_mlops.management_agent.secret_env', 'NAME')).
_SECRET_PAIR_READERS = re.compile(r"""(?:secret_fallback, \[|\.secret_env['"], )["']([A-Za-z0-9_]+)["']""")


def env_read_by_the_collection(name: str) -> bool:
    source = _environment_readers()
    if re.search(rf"""["']{re.escape(name)}["']""", source):
        return True
    return name.endswith("_FILE") and name.removesuffix("_FILE") in _SECRET_PAIR_READERS.findall(source)


def test_the_readers_tell_read_from_unread():
    assert read_by_the_collection("mlops_pps_image_version")                # an option
    assert read_by_the_collection("mlops_hosts")                            # only in a playbook's template
    assert not read_by_the_collection("mlops_pps_image_versions")
    assert not read_by_the_collection("pps_version")
    assert set(options_fed_by("mlops_pps_image_version")) >= {"mlops_pps_image_version", "mlops_management_agent_version"}
    assert env_read_by_the_collection("DATAROBOT_API_TOKEN") and env_read_by_the_collection("K8S_AUTH_KUBECONFIG")
    assert not env_read_by_the_collection("DATAROBOT_TOKEN")
    assert env_read_by_the_collection("REGISTRY_PASSWORD_FILE")  # through secret_env / secret_fallback
    assert env_read_by_the_collection("DATAROBOT_API_TOKEN_FILE")  # the same: the roles' lookup, the modules' fallback
    assert not env_read_by_the_collection("REGISTRY_USERNAME_FILE")  # REGISTRY_USERNAME is read alone


# ---------------------------------------------------------------------------------------------------------------
# AWX's survey rules (its job template survey_spec view, and the launch-time checks of survey answers/defaults)

SURVEY_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,), "textarea": (str,), "password": (str,), "multiplechoice": (str,), "multiselect": (str,),
    "integer": (int,), "float": (int, float),
}
_SECRET_NAME = re.compile(r"pass(word)?|token|secret|api_?key|private_key", re.IGNORECASE)


def valid_variable_name(name: str) -> bool:
    """A name Ansible accepts as an extra var, not one of its reserved words and not its own ansible_* namespace."""
    return isidentifier(name) and not is_reserved_name(name) and not name.startswith("ansible_")


def is_secret(variable: str) -> bool:
    return bool(_SECRET_NAME.search(variable)) or bool(_role_specs().get(variable, {}).get("no_log"))


def survey_problems(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return ["a survey spec is a JSON object"]
    problems = [f"the survey needs {key!r} ({kind.__name__})"
                for key, kind in (("name", str), ("description", str), ("spec", list))
                if not isinstance(spec.get(key), kind)]
    questions = spec.get("spec") if isinstance(spec.get("spec"), list) else []
    if not questions:
        problems.append("the survey has no question")
    seen: set[str] = set()
    for index, question in enumerate(questions):
        if not isinstance(question, dict):
            problems.append(f"question {index} is not an object")
            continue
        problems += _question_problems(index, question, seen)
    return problems


def _question_problems(index: int, question: dict, seen: set[str]) -> list[str]:
    problems = [f"question {index}: {key!r} must be a {kind.__name__}"
                for key, kind in (("type", str), ("question_name", str), ("variable", str), ("required", bool))
                if not isinstance(question.get(key), kind)]
    variable, qtype = question.get("variable"), question.get("type")
    where = f"question {variable!r}"
    if variable in seen:
        problems.append(f"{where}: the variable is asked twice")
    seen.add(variable)
    if isinstance(variable, str) and not valid_variable_name(variable):
        problems.append(f"{where}: not a variable name Ansible accepts")
    if qtype not in SURVEY_TYPES:
        return problems + [f"{where}: type {qtype!r} is not one of {', '.join(SURVEY_TYPES)}"]
    for bound in ("min", "max"):
        value = question.get(bound)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{where}: {bound} must be an integer")
    default = question.get("default")
    has_default = "default" in question and default != ""
    if has_default and (isinstance(default, bool) or not isinstance(default, SURVEY_TYPES[qtype])):
        problems.append(f"{where}: default {default!r} does not fit type {qtype}")
    if isinstance(default, str) and default.startswith("$encrypted$"):
        problems.append(f"{where}: $encrypted$ is reserved for stored password defaults")
    if qtype in ("multiplechoice", "multiselect"):
        problems += _choice_problems(where, qtype, question)
    if qtype == "password" and "default" in question:
        problems.append(f"{where}: a password question carries no default in the repository")
    if qtype != "password" and isinstance(variable, str) and is_secret(variable):
        problems.append(f"{where}: a secret must be asked with type password")
    problems += _bound_problems(where, qtype, question)
    return problems


def _choice_problems(where: str, qtype: str, question: dict) -> list[str]:
    choices = question.get("choices")
    if isinstance(choices, str):
        choices = [choice for choice in choices.splitlines() if choice.strip()]
    if not isinstance(choices, list) or not choices or not all(isinstance(choice, str) for choice in choices):
        return [f"{where}: a {qtype} question must list its choices"]
    problems = [f"{where}: choice {choice!r} is listed twice" for choice in set(choices) if choices.count(choice) > 1]
    default = question.get("default")
    if default in (None, ""):
        return problems
    picked = [line for line in default.splitlines() if line.strip()] if isinstance(default, str) else default
    if qtype == "multiplechoice" and len(picked) > 1:
        problems.append(f"{where}: a multiplechoice question has one default")
    problems += [f"{where}: default {item!r} is not a choice" for item in picked if item not in choices]
    return problems


def _bound_problems(where: str, qtype: str, question: dict) -> list[str]:
    """AWX applies a default only if it passes the question's own min/max: say so instead of dropping it silently."""
    default, low, high = question.get("default"), question.get("min"), question.get("max")
    if default in (None, ""):
        return []
    if qtype in ("text", "textarea", "password") and isinstance(default, str):
        measure = len(default)
    elif qtype in ("integer", "float") and isinstance(default, (int, float)):
        measure = default
    else:
        return []
    if isinstance(low, int) and measure < low or isinstance(high, int) and measure > high:
        return [f"{where}: default {default!r} is outside min/max, so AWX would ignore it"]
    return []


_QUESTION_TYPE_FOR_OPTION = {"str": {"text", "textarea", "password", "multiplechoice"}, "path": {"text", "textarea"},
                             "int": {"integer"}, "float": {"float", "integer"}, "list": {"multiselect"},
                             "raw": set(SURVEY_TYPES)}


SURVEY_PREFIX = "mlops_survey_"


@lru_cache(maxsize=None)
def survey_settings() -> tuple[str, ...]:
    """The settings playbooks/tasks/survey_answers.yml sets from mlops_survey_<name> answers (by <name>)."""
    task = _yaml(REPO / "playbooks" / "tasks" / "survey_answers.yml")[0]
    return tuple(task["vars"]["__survey_settings"])


def setting_of(variable: str) -> str | None:
    """The setting a question's answer becomes: its own variable, or for mlops_survey_<name> the mlops_<name> the
    survey answers task sets (None when that task does not list it)."""
    if not variable.startswith(SURVEY_PREFIX):
        return variable
    name = variable[len(SURVEY_PREFIX):]
    return f"mlops_{name}" if name in survey_settings() else None


def survey_fit_problems(spec: dict) -> list[str]:
    """Each question feeds a variable the collection reads, in a type and with choices the role accepts; an optional
    one through mlops_survey_<name> (AWX sends a question left empty as "" or null, which as the setting itself would
    beat every host's inventory)."""
    problems = []
    for question in spec["spec"]:
        variable, qtype = question["variable"], question["type"]
        if not question.get("required") and not variable.startswith(SURVEY_PREFIX):
            problems.append(f"{variable}: an optional question left empty would wipe the inventory's value: ask it "
                            f"as {SURVEY_PREFIX}<name> (playbooks/tasks/survey_answers.yml)")
        setting = setting_of(variable)
        if setting is None:
            problems.append(f"{variable}: playbooks/tasks/survey_answers.yml does not turn it into a setting")
            continue
        if not read_by_the_collection(setting):
            problems.append(f"{variable}: no role or playbook reads it")
            continue
        variable = setting
        direct = _role_specs().get(variable)
        if direct and qtype not in _QUESTION_TYPE_FOR_OPTION.get(direct.get("type", "str"), set()):
            problems.append(f"{variable}: a {qtype} answer does not fit the option's type {direct.get('type', 'str')}")
        if qtype in ("multiplechoice", "multiselect"):
            for option, option_spec in options_fed_by(variable).items():
                extra = set(question["choices"]) - set(option_spec.get("choices") or question["choices"])
                if extra:
                    problems.append(f"{variable}: choices {sorted(extra)} are not accepted by {option}")
    return problems


@pytest.mark.parametrize("name", surveys())
def test_surveys_follow_awx_rules(name):
    assert survey_problems(survey(name)) == []


@pytest.mark.parametrize("name", surveys())
def test_survey_questions_feed_what_the_roles_read(name):
    assert survey_fit_problems(survey(name)) == []


def test_the_survey_answers_task_sets_exactly_the_settings_the_surveys_ask():
    asked = {question["variable"][len(SURVEY_PREFIX):] for name in surveys() for question in survey(name)["spec"]
             if question["variable"].startswith(SURVEY_PREFIX)}
    assert asked == set(survey_settings())


def _question(**changes) -> dict:
    question = {"question_name": "PPS version", "variable": "mlops_pps_image_version", "type": "text", "required": True,
                "min": 1, "max": 64}
    question.update(changes)
    return {key: value for key, value in question.items() if value is not None}


_BROKEN_SURVEYS = {
    "no description": {"name": "s", "spec": [_question()]},
    "no questions": {"name": "s", "description": "", "spec": []},
    "unknown type": {"name": "s", "description": "", "spec": [_question(type="string")]},
    "required as text": {"name": "s", "description": "", "spec": [_question(required="true")]},
    "bad variable name": {"name": "s", "description": "", "spec": [_question(variable="pps-version")]},
    "reserved variable": {"name": "s", "description": "", "spec": [_question(variable="environment")]},
    "duplicate variable": {"name": "s", "description": "", "spec": [_question(), _question(question_name="again")]},
    "choices missing": {"name": "s", "description": "", "spec": [_question(type="multiplechoice")]},
    "default not a choice": {"name": "s", "description": "",
                             "spec": [_question(type="multiplechoice", choices=["a", "b"], default="c")]},
    "two defaults": {"name": "s", "description": "",
                     "spec": [_question(type="multiplechoice", choices=["a", "b"], default="a\nb")]},
    "integer default as text": {"name": "s", "description": "", "spec": [_question(type="integer", default="5")]},
    "min as text": {"name": "s", "description": "", "spec": [_question(min="1")]},
    "default too long": {"name": "s", "description": "", "spec": [_question(default="9" * 65)]},
    "secret as text": {"name": "s", "description": "", "spec": [_question(variable="mlops_registry_password")]},
    "password with default": {"name": "s", "description": "",
                              "spec": [_question(variable="mlops_registry_password", type="password", default="hunter2")]},
}


@pytest.mark.parametrize("broken", list(_BROKEN_SURVEYS))
def test_survey_rules_catch_each_broken_survey(broken):
    assert survey_problems(_BROKEN_SURVEYS[broken])


@pytest.mark.parametrize("question, problem", [
    (_question(variable="mlops_pps_image_versions"), "no role or playbook reads it"),
    (_question(type="integer", default=None), "does not fit the option's type"),
    (_question(variable="mlops_survey_registry_vendor", type="multiplechoice", choices=["generic", "quay"]),
     "are not accepted by mlops_registry_vendor"),
    (_question(variable="mlops_survey_pps_image_versions"), "does not turn it into a setting"),
    (_question(variable="mlops_pps_image_archive", required=False), "would wipe the inventory's value"),
    (_question(variable="mlops_survey_pps_image_archive", type="integer", required=False),
     "does not fit the option's type"),
])
def test_survey_fit_catches_questions_the_roles_would_not_take(question, problem):
    assert problem in " ".join(survey_fit_problems({"spec": [question]}))


# ---------------------------------------------------------------------------------------------------------------
# AWX's rules for custom credential types (its CredentialType inputs/injectors fields and serializer)

_FIELD_ID = re.compile(r"[a-zA-Z_]+[a-zA-Z0-9_]*")
_FILE_KEY = re.compile(r"template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?")
_FIELD_KEYS = {"id", "label", "type", "format", "choices", "help_text", "multiline", "secret", "ask_at_runtime",
               "default"}
# AWX's ENV_BLOCKLIST (awx/main/constants.py): variables a credential may not set. Names starting with ANSIBLE_ are
# refused too.
_ENV_BLOCKLIST = {"VIRTUAL_ENV", "PATH", "PYTHONPATH", "PROOT_TMP_DIR", "JOB_ID", "INVENTORY_ID", "INVENTORY_SOURCE_ID",
                  "INVENTORY_UPDATE_ID", "AD_HOC_COMMAND_ID", "REST_API_URL", "REST_API_TOKEN", "MAX_EVENT_RES",
                  "CALLBACK_QUEUE", "CALLBACK_CONNECTION", "CACHE", "JOB_CALLBACK_DEBUG", "INVENTORY_HOSTVARS",
                  "AWX_HOST", "PROJECT_REVISION", "SUPERVISOR_WEB_CONFIG_PATH"}
# AWX shows a job's environment with the values of variables named like this masked.
_MASKED_ENV = re.compile(r"API|TOKEN|KEY|SECRET|PASS", re.IGNORECASE)


class _Reserved:
    """AWX's `tower` namespace: rendering it (or a file name nobody declared) is an error."""

    def __init__(self, what: str, **attributes: Any):
        self._what = what
        self.__dict__.update(attributes)

    def __str__(self) -> str:
        raise UndefinedError(self._what)


def credential_type_problems(definition: dict) -> list[str]:
    problems = []
    if definition.get("kind") not in ("cloud", "net"):
        problems.append(f"kind {definition.get('kind')!r}: custom credential types are cloud or net")
    inputs, injectors = definition.get("inputs") or {}, definition.get("injectors") or {}
    problems += [f"inputs.{key} is not supported for custom credential types" for key in set(inputs) - {"fields", "required"}]
    ids = []
    for field in inputs.get("fields", []):
        problems += _field_problems(field, ids)
        ids.append(field.get("id"))
    required = inputs.get("required", [])
    problems += [f"required {name!r} is not a field" for name in required if name not in ids]
    problems += _injector_problems(injectors, ids)
    return problems


def _field_problems(field: dict, ids: list) -> list[str]:
    field_id = field.get("id")
    where = f"field {field_id!r}"
    problems = [f"{where}: unknown key {key!r}" for key in set(field) - _FIELD_KEYS]
    if not isinstance(field_id, str) or not _FIELD_ID.fullmatch(field_id):
        problems.append(f"{where}: not a valid id")
    if field_id == "tower":
        problems.append(f"{where}: 'tower' is reserved")
    if field_id in ids:
        problems.append(f"{where}: ids must be unique")
    if not isinstance(field.get("label"), str):
        problems.append(f"{where}: needs a label")
    ftype = field.get("type", "string")
    if ftype not in ("string", "boolean"):
        problems.append(f"{where}: type {ftype!r} is not string or boolean")
    if ftype != "string":
        problems += [f"{where}: {key} only applies to strings" for key in ("choices", "multiline", "format", "secret")
                     if key in field]
    if "format" in field and field["format"] not in ("ssh_private_key", "url"):
        problems.append(f"{where}: format {field['format']!r} is unknown")
    choices = field.get("choices")
    if choices is not None and (not isinstance(choices, list) or not choices or len(set(choices)) != len(choices)
                                or not all(isinstance(choice, str) for choice in choices)):
        problems.append(f"{where}: choices are a non-empty list of distinct strings")
    if "default" in field and not isinstance(field["default"], {"string": str, "boolean": bool}.get(ftype, object)):
        problems.append(f"{where}: default does not fit type {ftype}")
    problems += [f"{where}: {key} is a boolean" for key in ("multiline", "secret", "ask_at_runtime")
                 if key in field and not isinstance(field[key], bool)]
    if field.get("ask_at_runtime"):
        problems.append(f"{where}: ask_at_runtime is not supported for custom credential types")
    if isinstance(field_id, str) and _SECRET_NAME.search(field_id) and not field.get("secret"):
        problems.append(f"{where}: looks like a secret, mark it secret")
    return problems


def _injector_problems(injectors: dict, ids: list) -> list[str]:
    problems = [f"injectors.{key} is not file, env or extra_vars" for key in set(injectors) - {"file", "env", "extra_vars"}]
    files = list(injectors.get("file", {}))
    problems += [f"file injector {key!r} is not template or template.<name>" for key in files if not _FILE_KEY.fullmatch(key)]
    if "template" in files and len(files) > 1:
        problems.append("one unnamed file injector, or only named ones (template.<name>)")
    filename: Any = _Reserved("tower.filename needs an unnamed file injector")
    if "template" in files:
        filename = "EXAMPLE_FILENAME"
    elif files:
        filename = _Reserved("tower.filename.<name> is one of the file injectors",
                             **{key.split(".", 1)[1]: "EXAMPLE_FILENAME" for key in files if "." in key})
    namespace = {field_id: "EXAMPLE" for field_id in ids}
    namespace["tower"] = _Reserved("the tower namespace cannot be rendered itself", filename=filename)
    for name in injectors.get("env", {}):
        if not _FIELD_ID.fullmatch(name):
            problems.append(f"env {name!r}: not a variable name")
        if name.startswith("ANSIBLE_") or name in _ENV_BLOCKLIST:
            problems.append(f"env {name!r}: AWX does not let credentials set it")
    for name in injectors.get("extra_vars", {}):
        if not _FIELD_ID.fullmatch(name):
            problems.append(f"extra var {name!r}: not a variable name")
    environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    for kind in ("file", "env", "extra_vars"):
        for key, template in injectors.get(kind, {}).items():
            if not isinstance(template, str) or (kind == "env" and not template.isascii()):
                problems.append(f"{kind} {key!r}: the template must be an ASCII string")
                continue
            try:
                environment.from_string(template).render(namespace)
            except (UndefinedError, SecurityError, TemplateSyntaxError) as exc:
                problems.append(f"{kind} {key!r}: {exc}")
    return problems


def _secret_fields(definition: dict) -> set[str]:
    return {field["id"] for field in definition["inputs"].get("fields", []) if field.get("secret")}


def masking_problems(definition: dict) -> list[str]:
    """A secret put into an environment variable must be one AWX masks when it shows the job's environment."""
    secrets = _secret_fields(definition)
    return [f"env {name} carries a secret but AWX would show it"
            for name, template in definition["injectors"].get("env", {}).items()
            if any(_referenced(secret, template) for secret in secrets) and not _MASKED_ENV.search(name)]


def _types_by_name() -> dict[str, dict]:
    return {definition["name"]: definition for definition in credential_types()}


@pytest.mark.parametrize("name", list(_types_by_name()))
def test_credential_types_pass_the_module_spec(name):
    definition = _types_by_name()[name]
    assert spec_errors("credential_type", dict(definition, state="present")) == []


@pytest.mark.parametrize("name", list(_types_by_name()))
def test_credential_types_follow_awx_rules(name):
    definition = _types_by_name()[name]
    assert credential_type_problems(definition) + masking_problems(definition) == []


@pytest.mark.parametrize("name", list(_types_by_name()))
def test_credential_types_inject_what_the_collection_reads(name):
    injectors = _types_by_name()[name]["injectors"]
    unread = [f"extra var {var}" for var in injectors.get("extra_vars", {}) if not read_by_the_collection(var)]
    unread += [f"env {var}" for var in injectors.get("env", {}) if not env_read_by_the_collection(var)]
    assert unread == []


def inventory_problems(definition: dict) -> list[str]:
    """Extra vars beat every inventory value, and a job's environment is written to ansible-runner's artifacts: a
    credential type injects no extra var, and a secret input reaches the job only as a file."""
    injectors, secret = definition.get("injectors") or {}, _secret_fields(definition)
    problems = [f"extra var {name} would override every host's inventory" for name in injectors.get("extra_vars", {})]
    problems += [f"env {name} carries a secret: inject a file and its path (tower.filename.<name>) instead"
                 for name, template in injectors.get("env", {}).items()
                 if any(_referenced(field, template) for field in secret)]
    return problems


@pytest.mark.parametrize("name", list(_types_by_name()))
def test_credential_types_let_the_inventory_win_and_keep_secrets_out_of_the_environment(name):
    assert inventory_problems(_types_by_name()[name]) == []


def test_inventory_rule_catches_extra_vars_and_secrets_in_the_environment():
    problems = inventory_problems({"inputs": {"fields": [{"id": "password", "label": "P", "secret": True}]},
                                   "injectors": {"extra_vars": {"mlops_registry_password": "{{ password }}"},
                                                 "env": {"REGISTRY_PASSWORD": "{{ password }}",
                                                         "REGISTRY_PASSWORD_FILE": "{{ tower.filename.password }}"}}})
    assert problems == ["extra var mlops_registry_password would override every host's inventory",
                        "env REGISTRY_PASSWORD carries a secret: inject a file and its path (tower.filename.<name>) "
                        "instead"]


def _type(**changes) -> dict:
    definition = copy.deepcopy(_types_by_name()["DataRobot MLOps API"])
    definition.update(changes)
    return definition


def _with_field(**field) -> dict:
    definition = _type()
    definition["inputs"]["fields"].append(dict({"id": "extra", "label": "Extra"}, **field))
    return definition


_BROKEN_TYPES = {
    "kind ssh": _type(kind="ssh"),
    "dependencies": _type(inputs=dict(_type()["inputs"], dependencies={"endpoint": ["api_token"]})),
    "bad field id": _with_field(id="api-token2"),
    "tower field": _with_field(id="tower"),
    "duplicate field": _with_field(id="endpoint"),
    "no label": _type(inputs={"fields": [{"id": "api_token", "secret": True}]}),
    "integer type": _with_field(type="integer"),
    "secret boolean": _with_field(type="boolean", secret=True),
    "unknown field key": _with_field(placeholder="x"),
    "ask at runtime": _with_field(ask_at_runtime=True),
    "required unknown": _type(inputs=dict(_type()["inputs"], required=["api_key"])),
    "injector kind": _type(injectors={"environment": {"X": "{{ api_token }}"}}),
    "undefined input": _type(injectors={"env": {"DATAROBOT_API_TOKEN": "{{ token }}"}}),
    "undeclared file": _type(injectors={"env": {"DATAROBOT_CA_PATH": "{{ tower.filename.ca }}"}}),
    "tower itself": _type(injectors={"env": {"X": "{{ tower }}"}}),
    "mixed file syntax": _type(injectors={"file": {"template": "a", "template.b": "b"}}),
    "ansible env": _type(injectors={"env": {"ANSIBLE_CONFIG": "{{ endpoint }}"}}),
    "blocked env": _type(injectors={"env": {"PATH": "{{ endpoint }}"}}),
    "syntax error": _type(injectors={"env": {"X": "{{ api_token "}}),
    "unsafe code": _type(injectors={"env": {"X": "{{ api_token.__class__.__mro__ }}"}}),
    "secret not secret": _with_field(id="mlops_registry_password"),
}


@pytest.mark.parametrize("broken", list(_BROKEN_TYPES))
def test_credential_type_rules_catch_each_broken_type(broken):
    assert credential_type_problems(_BROKEN_TYPES[broken])


def test_masking_rule_catches_a_secret_in_an_unmasked_variable():
    assert masking_problems(_type(injectors={"env": {"DATAROBOT_KEYLESS": "x", "DR_AUTH": "{{ api_token }}"}}))


# ---------------------------------------------------------------------------------------------------------------
# Credentials (the secrets themselves come from variables)

_EXPRESSION = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


def credential_problems(credential: dict, types: dict[str, dict]) -> list[str]:
    definition = types.get(credential.get("credential_type"))
    if definition is None:
        return [f"{credential.get('name')}: no credential type {credential.get('credential_type')!r}"]
    fields = {field["id"] for field in definition["inputs"]["fields"]}
    inputs = credential.get("inputs", {})
    problems = [f"{credential['name']}: {key!r} is not an input of its type" for key in set(inputs) - fields]
    problems += [f"{credential['name']}: required input {key!r} is missing"
                 for key in definition["inputs"].get("required", []) if key not in inputs]
    problems += [f"{credential['name']}: secret {key!r} must come from a variable, not from the repository"
                 for key in _secret_fields(definition) & set(inputs)
                 if not isinstance(inputs[key], str) or not _EXPRESSION.fullmatch(inputs[key].strip())]
    params = {key: value for key, value in credential.items() if key != "create"}
    problems += spec_errors("credential", dict(params, organization="Default", state="present"))
    return problems


@pytest.mark.parametrize("credential", credentials(), ids=lambda credential: credential["name"])
def test_credentials_match_their_types_and_hold_no_secret(credential):
    assert credential_problems(credential, _types_by_name()) == []


def test_every_credential_type_gets_a_credential():
    assert sorted(credential["credential_type"] for credential in credentials()) == sorted(_types_by_name())


@pytest.mark.parametrize("change, problem", [
    ({"inputs": {"api_token": "d0n7-l34k-m3"}}, "must come from a variable"),
    ({"inputs": {"endpoint": "{{ awx_datarobot_endpoint }}"}}, "required input 'api_token' is missing"),
    ({"inputs": {"api_token": "{{ awx_datarobot_api_token }}", "token": "{{ x }}"}}, "is not an input of its type"),
    ({"credential_type": "DataRobot"}, "no credential type"),
    ({"update_secret": True}, "Supported parameters include"),
])
def test_credential_rules_catch_each_broken_credential(change, problem):
    credential = dict(credentials()[0], **change)
    assert problem in " ".join(credential_problems(credential, _types_by_name()))


# ---------------------------------------------------------------------------------------------------------------
# Job templates


def job_template_params(template: dict) -> dict:
    """What configure.yml sends for a template (organization, project ... are placeholders for its variables)."""
    params = {key: value for key, value in template.items() if key not in META_KEYS}
    params.update(organization="Default", project="DataRobot MLOps management agent",
                  execution_environment="DataRobot MLOps management agent",
                  credentials=[credential["name"] for credential in credentials()],
                  survey_enabled="survey" in template, state="present")
    if "survey" in template:
        params["survey_spec"] = survey_for(template)
    return params


@pytest.mark.parametrize("template", job_templates(), ids=lambda template: template["name"])
def test_job_templates_pass_the_module_spec(template):
    assert spec_errors("job_template", job_template_params(template)) == []


@pytest.mark.parametrize("template", [t for t in job_templates() if "survey" in t], ids=lambda t: t["name"])
def test_job_template_surveys_follow_awx_rules(template):
    narrowed = survey_for(template)
    asked = [question["variable"] for question in narrowed["spec"]]
    assert sorted(asked) == sorted(template.get("survey_variables", asked)), "survey_variables names no question"
    assert survey_problems(narrowed) == []


def extra_var_problems(extra_vars: dict) -> list[str]:
    """Template extra vars are role options, and the literal ones hold values the role's spec accepts."""
    specs = _role_specs()
    problems = [f"{name}: not an option of any role" for name in extra_vars if name not in specs]
    literal = {name: value for name, value in extra_vars.items()
               if name in specs and not (isinstance(value, str) and ("{{" in value or "{%" in value))}
    narrowed = {name: {key: value for key, value in specs[name].items() if key not in ("required", "default")}
                for name in literal}
    return problems + ArgumentSpecValidator(narrowed).validate(literal).error_messages


@pytest.mark.parametrize("template", job_templates(), ids=lambda template: template["name"])
def test_job_template_extra_vars_are_role_options_with_valid_values(template):
    assert extra_var_problems(template.get("extra_vars", {})) == []
    for value in template.get("extra_vars", {}).values():
        for name in re.findall(r"\{\{\s*([a-z_][a-z0-9_]*)", str(value)):
            assert read_by_the_collection(name), f"{name} is read by nothing"


@pytest.mark.parametrize("extra_vars, problem", [
    ({"mlops_pps_image_methods": "direct"}, "not an option of any role"),
    ({"mlops_pps_image_method": "docker"}, "must be one of"),
    ({"mlops_pps_image_workers": "many"}, "cannot be converted to an int"),
])
def test_extra_var_rules_catch_each_broken_value(extra_vars, problem):
    assert problem in " ".join(extra_var_problems(extra_vars))


def test_job_templates_need_no_docker_daemon():
    """Execution environments have no Docker daemon: the PPS push is direct, and no survey offers a daemon path."""
    for template in job_templates():
        assert template["extra_vars"]["mlops_pps_image_method"] == "direct", template["name"]
    for name in surveys():
        for question in survey(name)["spec"]:
            if question["variable"].endswith("_method"):
                assert not {"build", "daemon", "auto"} & set(question.get("choices", [])), question["variable"]


def test_job_templates_cover_every_stage_of_site_yml():
    playbooks = [template["playbook"] for template in job_templates()]
    assert len(set(playbooks)) == len(playbooks), "two templates for one playbook"
    assert [t["playbook"] for t in job_templates() if "stage" not in t] == ["site.yml"]
    missing = [playbook for playbook in playbooks if not (REPO / playbook).is_file()]
    assert missing == []
    # site.yml imports playbooks/site.yml (the collection's), which imports the stages from its own directory.
    assert [play.get("ansible.builtin.import_playbook") for play in _yaml(REPO / "site.yml")] == ["playbooks/site.yml"]
    imported = {"playbooks/" + play["ansible.builtin.import_playbook"] for play in _yaml(REPO / "playbooks/site.yml")
                if "ansible.builtin.import_playbook" in play}
    assert imported, "playbooks/site.yml imports no stage"
    assert imported - NOT_STAGES - set(playbooks) == set(), "a stage of site.yml without a template"


def test_job_template_names_are_unique():
    names = [template["name"] for template in job_templates()]
    assert len(set(names)) == len(names)


# ---------------------------------------------------------------------------------------------------------------
# Inventories


@pytest.mark.parametrize("inventory", inventories(), ids=lambda inventory: inventory["vendor"])
def test_inventories_pass_the_module_specs(inventory):
    assert inventory["source_path"] == f"inventories/{inventory['vendor']}/"
    assert spec_errors("inventory", {"name": inventory["name"], "description": inventory["description"],
                                     "organization": "Default", "state": "present"}) == []
    assert spec_errors("inventory_source", {
        "name": f"{inventory['name']} (project)", "inventory": inventory["name"], "organization": "Default",
        "source": "scm", "source_project": "DataRobot MLOps management agent", "source_path": inventory["source_path"],
        "overwrite": True, "overwrite_vars": True, "update_on_launch": True, "state": "present"}) == []


def test_every_vendor_inventory_of_the_repository_is_offered():
    on_disk = {path.name for path in (REPO / "inventories").iterdir() if path.is_dir()} - {"local"}
    assert {inventory["vendor"] for inventory in inventories()} == on_disk


# ---------------------------------------------------------------------------------------------------------------
# configure.yml itself


def _configure_tasks() -> list[dict]:
    return _yaml(AWX / "configure.yml")[0]["tasks"]


def _awx_tasks() -> dict[str, dict]:
    found = {}
    for task in _configure_tasks():
        for key, args in task.items():
            if key.startswith("awx.awx."):
                found[key.rsplit(".", 1)[1]] = args
    return found


@pytest.mark.parametrize("module", sorted(_awx_tasks()))
def test_configure_passes_only_options_the_modules_have(module):
    assert set(_awx_tasks()[module]) - option_names(module) == set()


def test_configure_forwards_every_key_of_the_definitions():
    """A key in the data that configure.yml does not pass on would be silently ignored."""
    tasks = _awx_tasks()
    for template in job_templates():
        assert set(template) - META_KEYS - set(tasks["job_template"]) == set(), template["name"]
    for definition in credential_types():
        assert set(definition) - set(tasks["credential_type"]) == set(), definition["name"]
    for credential in credentials():
        assert set(credential) - {"create"} - set(tasks["credential"]) == set(), credential["name"]


def test_configure_playbook_syntax():
    proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", str(AWX / "configure.yml")],
                          capture_output=True, text=True, env=ansible_env(), cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr


# A stand-in awx.awx: each module validates its parameters with the real module's spec (AnsibleModule does the
# type conversion, choices and unknown-option checks) and appends them to a file instead of calling AWX.
_STAND_IN = '''#!/usr/bin/python
import json
import os

from ansible.module_utils.basic import AnsibleModule

SPEC = json.loads(%r)


def main():
    module = AnsibleModule(argument_spec=SPEC, supports_check_mode=True)
    with open(os.environ["AWX_RECORD"], "a") as record:
        record.write(json.dumps({"module": %r, "params": module.params}) + "\\n")
    module.exit_json(changed=False)


if __name__ == "__main__":
    main()
'''


def _json_spec(spec: dict) -> str:
    return json.dumps({name: {key: value for key, value in option.items() if key != "fallback"}
                       for name, option in spec.items()})


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stand_in")
    modules = root / "ansible_collections/awx/awx/plugins/modules"
    modules.mkdir(parents=True)
    (root / "ansible_collections/awx/awx/meta").mkdir()
    (root / "ansible_collections/awx/awx/meta/runtime.yml").write_text("---\nrequires_ansible: '>=2.15.0'\n")
    for module in _awx_tasks():
        (modules / f"{module}.py").write_text(_STAND_IN % (_json_spec(awx_spec(module)), module))
    return root


SECRETS = {"awx_datarobot_api_token": "dr-token-0f3b9c", "awx_registry_password": "reg-pass-77aa1e",
           "awx_kubeconfig": "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: kube-token-5d2c}}]\n"}


def run_configure(stand_in: Path, tmp_path: Path, extra_vars: dict) -> tuple[subprocess.CompletedProcess, list[dict]]:
    record = tmp_path / "record.jsonl"
    record.touch()
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=f"{stand_in}:{REPO / '.collections'}", AWX_RECORD=str(record),
                      ANSIBLE_STDOUT_CALLBACK="default")
    for name in ("DATAROBOT_API_TOKEN", "DATAROBOT_ENDPOINT", "REGISTRY_PASSWORD", "CONTROLLER_HOST"):
        env.pop(name, None)
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(AWX / "configure.yml"), "-vvv",
                           "-e", json.dumps(extra_vars)], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600, check=False)
    return proc, [json.loads(line) for line in record.read_text().splitlines()]


def _sent(records: list[dict], module: str) -> list[dict]:
    return [entry["params"] for entry in records if entry["module"] == module]


def test_configure_sends_valid_objects_and_never_shows_a_secret(stand_in, tmp_path):
    proc, records = run_configure(stand_in, tmp_path, dict(
        SECRETS, awx_registry_host="registry.example.com", awx_registry_username="mlops-push",
        awx_datarobot_endpoint="https://app.datarobot.com", awx_stage_job_templates=True,
        awx_execution_environment_image="registry.example.com/datarobot/mlops-management-agent-ee:0.1.0"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    for secret in (*SECRETS.values(), "kube-token-5d2c"):
        assert secret not in output

    assert [params["name"] for params in _sent(records, "credential_type")] == list(_types_by_name())
    for params in _sent(records, "credential_type"):
        definition = _types_by_name()[params["name"]]
        assert params["injectors"] == definition["injectors"], "AWX's templates must reach AWX unrendered"
        assert credential_type_problems(params) == []

    sent = {params["name"]: params for params in _sent(records, "credential")}
    assert sorted(sent) == sorted(credential["name"] for credential in credentials())
    assert sent["DataRobot MLOps API"]["inputs"] == {"api_token": SECRETS["awx_datarobot_api_token"],
                                                     "endpoint": "https://app.datarobot.com"}  # empty ca_cert left out
    assert sent["DataRobot MLOps registry"]["inputs"]["password"] == SECRETS["awx_registry_password"]
    assert sent["DataRobot MLOps kubeconfig"]["inputs"]["kubeconfig"] == SECRETS["awx_kubeconfig"]
    assert all(params["update_secrets"] is False for params in sent.values())

    vendors = {inventory["name"] for inventory in inventories()}
    assert {params["name"] for params in _sent(records, "inventory")} == vendors
    assert {params["inventory"] for params in _sent(records, "inventory_source")} == vendors
    assert _sent(records, "execution_environment")[0]["image"].endswith("mlops-management-agent-ee:0.1.0")
    assert _sent(records, "project")[0]["default_environment"] == "DataRobot MLOps management agent"

    templates = {params["name"]: params for params in _sent(records, "job_template")}
    assert sorted(templates) == sorted(template["name"] for template in job_templates())
    for template in job_templates():
        params = templates[template["name"]]
        assert params["extra_vars"] == template["extra_vars"], "the jobs' templates must reach AWX unrendered"
        assert params["credentials"] == list(sent)
        assert params["survey_enabled"] is ("survey" in template)
        if "survey" in template:
            assert params["survey_spec"] == survey_for(template)
            assert survey_problems(params["survey_spec"]) == []


def test_configure_without_optional_secrets_skips_their_credentials(stand_in, tmp_path):
    proc, records = run_configure(stand_in, tmp_path, {"awx_datarobot_api_token": SECRETS["awx_datarobot_api_token"]})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [params["name"] for params in _sent(records, "credential")] == ["DataRobot MLOps API"]
    templates = _sent(records, "job_template")
    assert [params["name"] for params in templates] == [t["name"] for t in job_templates() if "stage" not in t]
    assert templates[0]["credentials"] == ["DataRobot MLOps API"]
    assert templates[0]["execution_environment"] is None and _sent(records, "execution_environment") == []


def test_configure_stops_before_anything_when_a_required_input_is_missing(stand_in, tmp_path):
    proc, records = run_configure(stand_in, tmp_path, {"awx_registry_password": SECRETS["awx_registry_password"]})
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())  # ansible-core 2.16's callback wraps long messages
    assert "DataRobot MLOps registry: host" in said and "DataRobot MLOps registry: username" in said
    assert SECRETS["awx_registry_password"] not in proc.stdout + proc.stderr
    assert records == []
