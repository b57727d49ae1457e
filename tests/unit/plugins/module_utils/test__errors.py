"""Every exception class the collection defines shares one root, so each module's main() catches one class."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

PLUGINS = Path(__file__).resolve().parents[4] / "plugins"
PACKAGE = "ansible_collections.datarobot_mlops.management_agent.plugins"
# Stand-ins for the kubernetes library's classes when it is missing: they must stay what the library raises.
THIRD_PARTY_STAND_INS = {"DynamicApiError", "NotFoundError", "ResourceNotFoundError", "TransportError"}


def _exception_classes() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PLUGINS.glob("module_utils/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name not in THIRD_PARTY_STAND_INS and any(
                    isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception")) for base in node.bases):
                found.append((path.stem, node.name))
    return found


def test_every_exception_class_derives_from_the_one_root():
    classes = _exception_classes()
    assert len(classes) >= 20
    for module_name, class_name in classes:
        cls = getattr(importlib.import_module(f"{PACKAGE}.module_utils.{module_name}"), class_name)
        assert issubclass(cls, MlopsError), f"{module_name}.{class_name}"


def test_no_two_exception_classes_share_a_name():
    names = [pair[1] for pair in _exception_classes()]
    assert len(names) == len(set(names)), sorted(names)


def test_every_module_main_catches_only_the_root():
    for path in sorted(PLUGINS.glob("modules/*.py")):
        tree = ast.parse(path.read_text())
        main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
        caught = {ast.unparse(handler.type) for node in ast.walk(main) if isinstance(node, ast.Try)
                  for handler in node.handlers}
        assert caught <= {"MlopsError"}, f"{path.name}: {caught}"
