# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A secret from the environment, either as its value (NAME) or as a file that holds it (NAME_FILE).

The AWX credential types of this collection hand secrets over as files (a file injector, its path in NAME_FILE), so
that the secret is never part of a job's environment, which ansible-runner writes to its artifacts and every child
process inherits. NAME still wins when both are set (a CI job that exports the value itself).

secret_from_env is the collection's one reader of such a pair: the modules' fallbacks use it where they run, and the
roles through the secret_env lookup on the controller (roles/registry: REGISTRY_PASSWORD; roles/prediction_environment
and roles/management_agent: DATAROBOT_API_TOKEN), so both read a secret alike.

secret_fallback is an argument spec fallback: it cannot fail the module itself (Ansible would show a traceback), so an
unreadable file gives an empty value and is recorded; the module calls raise_unreadable_secret_files() first thing.
"""

from __future__ import annotations

import os
from typing import Mapping

from ansible.module_utils.errors import AnsibleFallbackNotFound

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

# NAME -> why NAME_FILE could not be read, filled by secret_fallback in this module process.
_UNREADABLE: dict[str, str] = {}
# The NAMEs whose value secret_fallback gave in this module process: a secret the task did not pass, which may be
# meant for one endpoint only (DATAROBOT_API_TOKEN is DATAROBOT_ENDPOINT's).
_SUPPLIED: set[str] = set()


class SecretFileError(MlopsError):
    """NAME_FILE names a file that cannot be read."""


def secret_from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """NAME's value, else the content of the file NAME_FILE names (without its final line break), else None."""
    environ = os.environ if environ is None else environ
    if name in environ:
        return environ[name]
    path = environ.get(f"{name}_FILE", "")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretFileError(f"{name}_FILE names {path}, which cannot be read ({reason}): point it at a readable "
                              f"file that holds the value, or set {name} instead.") from exc


def secret_fallback(name: str) -> str:
    """An argument spec fallback: `fallback=(secret_fallback, ["NAME"])`."""
    try:
        value = secret_from_env(name)
    except SecretFileError as exc:
        _UNREADABLE[name] = str(exc)
        return ""
    if value is None:
        raise AnsibleFallbackNotFound
    _SUPPLIED.add(name)
    return value


def supplied_by_environment(name: str) -> bool:
    """Whether secret_fallback gave NAME's option its value (the task passed none)."""
    return name in _SUPPLIED


def raise_unreadable_secret_files() -> None:
    """Raise the SecretFileError of the first NAME_FILE secret_fallback could not read."""
    for message in _UNREADABLE.values():
        raise SecretFileError(message)
