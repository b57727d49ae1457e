# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The base of the modules that talk to a registry: one auth argument spec, one way to build a client, one way to fail.

REGISTRY_AUTH_ARGUMENT_SPEC is the registry_auth doc fragment as an argument spec, with the environment fallbacks
a CI job or an AWX credential sets (REGISTRY_HOST, REGISTRY_USERNAME, REGISTRY_PASSWORD or REGISTRY_PASSWORD_FILE, ...).
REGISTRY_HOST scopes
the login: a username and password are sent only to that registry, never to another one a task happens to name.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NoReturn

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.common.warnings import get_warning_messages

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import (
    Credentials,
    DockerConfigError,
    credentials_from_docker_config,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._duration import to_seconds
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import is_docker_hub
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    HAS_REQUESTS,
    RegistryAuthError,
    RegistryClient,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._secret_env import (
    raise_unreadable_secret_files,
    secret_fallback,
)

# The environment's login, read by the options' fallbacks and by a fleet destination without a login of its own.
USERNAME_ENV, PASSWORD_ENV = "REGISTRY_USERNAME", "REGISTRY_PASSWORD"

# The options of the registry_auth doc fragment (modules add retries and timeout).
REGISTRY_AUTH_ARGUMENT_SPEC: dict[str, dict[str, Any]] = dict(
    username=dict(type="str", fallback=(env_fallback, [USERNAME_ENV])),
    password=dict(type="str", no_log=True, fallback=(secret_fallback, [PASSWORD_ENV])),
    credentials_host=dict(type="str", fallback=(env_fallback, ["REGISTRY_HOST"])),
    docker_config=dict(type="path"),
    ca_path=dict(type="path", fallback=(env_fallback, ["REGISTRY_CA_PATH"])),
    validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["REGISTRY_VALIDATE_CERTS"])),
    insecure=dict(type="bool", default=False),
)


def same_registry(host: str, registry: str) -> bool:
    """`host` as a user writes it (maybe with a scheme or a trailing slash) names `registry` (host[:port])."""
    bare = host.strip().split("://", 1)[-1].rstrip("/").lower()
    return bare == registry.lower() or (is_docker_hub(bare) and is_docker_hub(registry))


def login_for(registry: str, params: Mapping[str, Any]) -> tuple[Credentials | None, str | None]:
    """The login to send to `registry`, and a warning when the given username and password belong elsewhere."""
    warning = None
    if params["username"]:
        scope = params["credentials_host"]
        if not scope or same_registry(scope, registry):
            return Credentials(params["username"], params["password"]), None
        warning = (f"username and password are for {scope} (credentials_host / REGISTRY_HOST), not {registry}: "
                   f"they are not sent to {registry}; its docker config login, if any, is used instead.")
    try:
        return credentials_from_docker_config(registry, params["docker_config"]), warning
    except DockerConfigError as exc:
        raise RegistryAuthError(str(exc)) from exc


def client_from_params(registry: str, params: Mapping[str, Any]) -> tuple[RegistryClient, Credentials | None, str | None]:
    """The client a module's registry_auth options (plus retries and timeout) describe, its login and any warning."""
    credentials, warning = login_for(registry, params)
    client = RegistryClient(registry, credentials, ca_path=params["ca_path"], validate_certs=params["validate_certs"],
                            insecure=params["insecure"], retries=params["retries"],
                            timeout=to_seconds(params["timeout"], "timeout"))
    return client, credentials, warning


class RegistryModule(AnsibleModule):
    """An AnsibleModule with the registry auth options, a client for them and MlopsError turned into fail_json."""

    def __init__(self, argument_spec: dict[str, Any], **kwargs: Any) -> None:
        spec = dict(REGISTRY_AUTH_ARGUMENT_SPEC)
        spec.update(argument_spec)
        together = [("username", "password")] + list(kwargs.pop("required_together", []))
        super().__init__(argument_spec=spec, required_together=together, **kwargs)
        if not HAS_REQUESTS:
            self.fail_json(msg=missing_required_lib("requests"))

    def registry_client(self, registry: str) -> tuple[RegistryClient, Credentials | None]:
        """A client for `registry` with the login the options give for it."""
        client, credentials, warning = client_from_params(registry, self.params)
        if warning:
            self.warn(warning)
        return client, credentials

    def worker_cleaner(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """For a background worker's result: what exit_json would print, the values Ansible masks masked, with the
        warnings given since now (the worker's own, not the starting task's)."""
        told = len(get_warning_messages())

        def clean(result: dict[str, Any]) -> dict[str, Any]:
            warnings = list(get_warning_messages()[told:])
            return remove_values({**result, **({"warnings": warnings} if warnings else {})}, self.no_log_values)

        return clean

    def run(self, action: Callable[[], dict[str, Any]]) -> NoReturn:
        """Exit with what `action` returns, or fail with the message of the MlopsError it raised."""

        def checked() -> dict[str, Any]:
            raise_unreadable_secret_files()
            return action()

        exit_with(self, checked)
