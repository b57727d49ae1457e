# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The login `docker login` left behind: docker's config.json and its credential helpers.

Its own file because reading a user's docker configuration has nothing to do with speaking the registry
protocol; the registry client only receives the `Credentials` found here.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import (
    credential_helper_environment,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    DOCKER_HUB_CONFIG_KEY,
    is_docker_hub,
)


class DockerConfigError(MlopsError):
    """config.json cannot be read, or names a credential helper that cannot be run."""


# What to do about a config.json docker would not have written.
REWRITE = "Fix it or remove it and log in again (docker login), or pass username/password."


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def default_config_path() -> str:
    """Where docker itself looks: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    return os.path.join(os.environ.get("DOCKER_CONFIG", os.path.expanduser("~/.docker")), "config.json")


def credentials_from_docker_config(registry: str, path: str | None = None) -> Credentials | None:
    """The login `docker login` stored for `registry` in config.json (auths, credHelpers, credsStore)."""
    path = path or default_config_path()
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise DockerConfigError(f"Cannot read docker config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise DockerConfigError(f"docker config {path} is not as docker writes it: it is not a JSON object. {REWRITE}")
    found = _from_auths(_section(config, "auths", path), registry, path)
    if found:
        return found
    # docker asks helpers about Docker Hub by its legacy index URL, whichever of its names the image used.
    server = DOCKER_HUB_CONFIG_KEY if is_docker_hub(registry) else registry
    helpers = _section(config, "credHelpers", path)
    helper = helpers.get(server) or helpers.get(registry) or config.get("credsStore")
    if helper:
        return _from_helper(helper, server)
    return None


def _section(config: dict, name: str, path: str) -> dict:
    """`config[name]` ({} when absent), which docker writes as an object: anything else is an error to fix, not an
    AttributeError further on."""
    section = config.get(name) or {}
    if not isinstance(section, dict):
        raise DockerConfigError(f"docker config {path} is not as docker writes it: its {name} is not a JSON object. "
                                f"{REWRITE}")
    return section


def _auth_keys(registry: str) -> list[str]:
    """Every `auths` key docker has written for `registry`; for Docker Hub its legacy index URL first."""
    hosts = ["index.docker.io", "docker.io", "registry-1.docker.io"] if is_docker_hub(registry) else [registry]
    keys = [DOCKER_HUB_CONFIG_KEY] if is_docker_hub(registry) else []
    for host in hosts:
        keys += [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    return list(dict.fromkeys(keys))


def _from_auths(auths: dict, registry: str, path: str) -> Credentials | None:
    """The first `auths` entry under one of the spellings docker has used for a registry's key."""
    for key in _auth_keys(registry):
        entry = auths.get(key)
        if entry and not isinstance(entry, dict):
            raise DockerConfigError(f"docker config {path} is not as docker writes it: its auths entry for {key} is "
                                    f"not a JSON object. {REWRITE}")
        if entry:
            if entry.get("auth"):
                return _decoded(entry["auth"], key, path)
            if entry.get("username"):
                return Credentials(entry["username"], entry.get("password", ""))
            if entry.get("identitytoken"):
                return Credentials("<token>", entry["identitytoken"])
    return None


def _decoded(auth: Any, key: str, path: str) -> Credentials:
    """The login in an `auths` entry's `auth`: base64 of user:password, decoded as docker does (line breaks skipped,
    anything else outside the alphabet refused). The message of a bad one never quotes it: it is the password, only
    encoded."""
    try:
        text = base64.b64decode(auth.replace("\r", "").replace("\n", "") if isinstance(auth, str) else auth,
                                validate=True).decode()
    except (ValueError, TypeError):  # binascii.Error and UnicodeDecodeError (which holds the bytes) are ValueErrors
        raise DockerConfigError(f"docker config {path}: the auth of {key} is not the base64 of user:password (UTF-8). "
                                f"{REWRITE}") from None
    username, password = (text.split(":", 1) + [""])[:2]
    return Credentials(username, password)


def _from_helper(helper: str, registry: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get`, as docker does; None when it has no login for `registry`.

    The helper gets the environment a credential helper needs (_child_env), not ours: the registry password and
    DataRobot token a run was given are none of its business."""
    try:
        proc = subprocess.run([f"docker-credential-{helper}", "get"], input=registry, capture_output=True,
                              text=True, timeout=60, check=False, env=credential_helper_environment())
    except OSError as exc:
        raise DockerConfigError(f"docker config names credential helper {helper!r}, but docker-credential-{helper} "
                                "cannot be run: install it or pass username/password.") from exc
    except subprocess.TimeoutExpired as exc:
        raise DockerConfigError(f"docker-credential-{helper} get did not answer within {exc.timeout:g} seconds (is it "
                                "waiting for a locked keychain or a prompt?): unlock it, or pass username/password."
                                ) from exc
    if proc.returncode:
        return None
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):  # what it printed is not quoted: it may be the secret
        raise DockerConfigError(f"docker-credential-{helper} get answered with no JSON object (the credential helper "
                                "protocol's {\"Username\": ..., \"Secret\": ...}): check that helper, or pass "
                                "username/password.")
    return Credentials(answer.get("Username", ""), answer.get("Secret", ""))
