"""Every exception class the collection defines shares one root, so each module's main() catches one class."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError, exit_with

PLUGINS = Path(__file__).resolve().parents[4] / "plugins"
PACKAGE = "ansible_collections.datarobot_mlops.management_agent.plugins"
# Stand-ins for the kubernetes library's classes when it is missing: they must stay what the library raises.
THIRD_PARTY_STAND_INS = {"DynamicApiError", "NotFoundError", "ResourceNotFoundError", "TransportError"}


def _exception_classes() -> list[tuple[str, str]]:
    """Every exception class defined in a module_utils module, found by importing it (whatever its bases are spelled
    like: a dotted base such as tarfile.ReadError is found too)."""
    found = []
    for path in sorted(PLUGINS.glob("module_utils/*.py")):
        if path.stem == "__init__":
            continue
        module = importlib.import_module(f"{PACKAGE}.module_utils.{path.stem}")
        for name, value in sorted(vars(module).items()):
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__ \
                    and name not in THIRD_PARTY_STAND_INS:
                found.append((path.stem, name))
    return found


def test_every_exception_class_derives_from_the_one_root():
    """A module's main() catches MlopsError alone: an exception class outside it would escape as a traceback."""
    classes = _exception_classes()
    assert len(classes) >= 20
    for module_name, class_name in classes:
        cls = getattr(importlib.import_module(f"{PACKAGE}.module_utils.{module_name}"), class_name)
        assert issubclass(cls, MlopsError), f"{module_name}.{class_name}"


def test_no_two_exception_classes_share_a_name():
    names = [pair[1] for pair in _exception_classes()]
    assert len(names) == len(set(names)), sorted(names)


# The calls that turn an MlopsError into fail_json: exit_with and the module bases' run() (which call it), and
# agent_deployment's runner, which also masks the secrets it found before failing.
ONE_WAY_OUT = {"exit_with", "run", "run_agent_deployment"}


def test_every_module_main_catches_nothing_itself_and_ends_in_the_one_way_out():
    for path in sorted(PLUGINS.glob("modules/*.py")):
        if (PLUGINS / "action" / path.name).exists():
            continue  # the documentation of an action plugin (push_progress, build_progress): no module code runs
        tree = ast.parse(path.read_text())
        main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
        assert not [node for node in ast.walk(main) if isinstance(node, ast.Try)], path.name
        last = main.body[-1]
        assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call), path.name
        called = last.value.func
        assert (called.attr if isinstance(called, ast.Attribute) else called.id) in ONE_WAY_OUT, path.name


def test_exit_with_turns_the_root_into_fail_json_with_its_result_and_lets_other_errors_through():
    class Module:
        def __init__(self):
            self.calls = []

        def fail_json(self, **kwargs):  # like AnsibleModule's, they never return
            self.calls.append(("fail", kwargs))
            raise SystemExit(1)

        def exit_json(self, **kwargs):
            self.calls.append(("exit", kwargs))
            raise SystemExit(0)

    class Unmet(MlopsError):
        result = {"unmet": ["a"]}

    def raise_(exc):
        raise exc

    module = Module()
    with pytest.raises(SystemExit):
        exit_with(module, lambda: raise_(Unmet("short")))
    assert module.calls == [("fail", {"msg": "short", "unmet": ["a"]})]
    module = Module()
    with pytest.raises(SystemExit):
        exit_with(module, lambda: {"changed": False})
    assert module.calls == [("exit", {"changed": False})]
    with pytest.raises(KeyError):
        exit_with(Module(), lambda: raise_(KeyError("bug")))
