# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One pps_image run that pushes one archive to more registries too (its `fleet`): the role's fleet mode.

Each destination is a push of its own, in a thread of this process; the pushes share the archive's spool, so each
layer is read and compressed once. Against one module run per cluster (each its own process, which the spool also
lets share the compressing), this saves every further cluster its module start and its own push's overhead.

A destination that cannot be reached, logged in to or pushed to fails alone: its entry in the result says why, and
the other pushes go on. The run fails only when its own (first) destination failed, with every entry in its result.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, NamedTuple

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import (
    PASSWORD_ENV,
    USERNAME_ENV,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._secret_env import secret_from_env

# The registry_auth options a fleet destination gives for itself; the rest (retries, timeout, docker_config) are
# the run's own, alike for all.
OWN_OPTIONS = ("ca_path", "validate_certs", "insecure")
# The registry the environment's login (USERNAME_ENV, PASSWORD_ENV) is for: the AWX registry credential sets all three.
HOST_ENV = "REGISTRY_HOST"


class FleetError(MlopsError):
    """The run's own destination failed; `result` holds every destination's entry (`fleet`)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class Destination(NamedTuple):
    """One registry repository to push to, by the key the caller knows it by (the role: the inventory host)."""

    key: str
    name: str
    params: Mapping[str, Any]  # the registry_auth options for it, as client_from_params reads them


def destination_params(params: Mapping[str, Any], given: Mapping[str, Any],
                       environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The registry_auth options of a fleet destination: its own login and TLS options, else what its own module run
    would have had. Without a username of its own, that is the environment's login (REGISTRY_USERNAME and
    REGISTRY_PASSWORD, for REGISTRY_HOST when set): never the run's own username, which belongs to its registry. That
    login is scoped by REGISTRY_HOST, not by the run's credentials_host, lest one registry's password go to another."""
    environ = os.environ if environ is None else environ
    options = dict(params)
    options.update({name: given[name] for name in OWN_OPTIONS})
    if given.get("username"):
        options.update(username=given["username"], password=given.get("password"))
    else:
        options.update(username=environ.get(USERNAME_ENV) or None, password=secret_from_env(PASSWORD_ENV, environ),
                       credentials_host=environ.get(HOST_ENV) or params.get("credentials_host"))
    return options


def destinations(params: Mapping[str, Any]) -> list[Destination]:
    """The fleet option's destinations, checked: each key once."""
    found: list[Destination] = []
    for given in params["fleet"] or []:
        key = given["key"]
        if not key:
            raise MlopsError("A fleet destination has an empty key: give each one a key (the role: its host's name).")
        if any(key == other.key for other in found):
            raise MlopsError(f"fleet names the key {key!r} twice: give each destination a key of its own.")
        found.append(Destination(key, given["name"], destination_params(params, given)))
    return found


def failed_entry(image: str, error: BaseException) -> dict[str, Any]:
    """A destination's entry when its push could not be made."""
    return {"failed": True, "changed": False, "image": image, "msg": str(error)}


Push = Callable[[], "dict[str, Any]"]


def identity(name: str, params: Mapping[str, Any]) -> tuple:
    """What makes two destinations one: the same repository, pushed to with the same login and TLS options (hosts
    of a fleet may share a registry)."""
    return (name, params["username"], params["password"]) + tuple(params[option] for option in OWN_OPTIONS)


def push_all(own: Push, others: Mapping[str, Push], images: Mapping[str, str],
             same: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run the run's own push and every fleet destination's at once, a thread each. The result: the own push's
    values, and `fleet`, each destination's entry by key (with its own `changed`); the run's `changed` is whether
    any registry changed (one task pushed to them all), `own_changed` whether its own did (a role that reports each
    cluster as a host of its own takes that one). An MlopsError (or OSError) ends that one push alone; the
    own push's ends the run, as a FleetError that carries the entries. `same` maps the key of a destination pushed
    to already under another key to that key ("" for the run's own): it gets the same entry, and no push."""
    entries: dict[str, dict[str, Any]] = {}

    def one(key: str, push: Push) -> None:
        try:
            entries[key] = push()
        except (MlopsError, OSError) as exc:
            entries[key] = failed_entry(images.get(key, ""), exc)

    pushes = {"": own, **others}  # "": the run's own destination (fleet keys are never empty)
    with ThreadPoolExecutor(max_workers=len(pushes), thread_name_prefix="fleet") as pool:
        for future in [pool.submit(one, key, push) for key, push in pushes.items()]:
            future.result()
    for key, first in (same or {}).items():
        entries[key] = {name: value for name, value in entries[first].items() if name != "fleet"}
    fleet = {key: entries[key] for key in images}
    if entries[""].get("failed"):
        raise FleetError(entries[""]["msg"], {"fleet": fleet})
    changed = any(entry.get("changed") for entry in [entries[""], *fleet.values()])
    return {**entries[""], "changed": changed, "own_changed": bool(entries[""].get("changed")), "fleet": fleet}


def fleet_diff(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One diff per registry of a fleet run, each headed by its image, so that `--diff` shows every registry the run
    pushed to, not only its own: the run's own first, then each destination's, a registry shared by several keys
    once. Entries without a diff (a destination that failed) show nothing."""
    diffs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in [result, *result.get("fleet", {}).values()]:
        image = entry.get("image", "")
        if "diff" not in entry or image in seen:
            continue
        seen.add(image)
        diffs.append({**entry["diff"], "before_header": image, "after_header": image})
    return diffs
