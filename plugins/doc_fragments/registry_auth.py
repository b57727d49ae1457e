# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    """How our modules reach and log in to a Docker v2 / OCI registry."""

    DOCUMENTATION = r"""
options:
  username:
    description:
      - Registry user. Without it, the login C(docker login) stored for the registry in I(docker_config) is used,
        including credential helpers; without either, the registry is accessed anonymously.
      - Basic and Docker token (Bearer) authentication are both handled, as the registry asks.
      - Default from C(REGISTRY_USERNAME).
    type: str
  password:
    description:
      - Password or token for I(username). Never shown in output or messages.
      - Default from C(REGISTRY_PASSWORD), else the content of the file that C(REGISTRY_PASSWORD_FILE) names (what
        this collection's AWX credential type sets, so that the password is not in the job's environment).
    type: str
  credentials_host:
    description:
      - Registry (host and optional port) that I(username) and I(password) belong to. When set, they are sent only
        to that registry; for an image on another registry they are left out (with a warning) and that registry's
        I(docker_config) login, if any, is used. Unset, they go to the registry of the image named in the task.
      - Default from C(REGISTRY_HOST), so that a CI job or an AWX credential that sets C(REGISTRY_HOST),
        C(REGISTRY_USERNAME) and C(REGISTRY_PASSWORD) (or C(REGISTRY_PASSWORD_FILE)) cannot hand its password to another registry.
    type: str
  docker_config:
    description: Path of a docker C(config.json) to read credentials from. Default C($DOCKER_CONFIG/config.json)
      or C(~/.docker/config.json).
    type: path
  ca_path:
    description: PEM file of the CA that signed the registry's certificate, when it is not in the system store.
      Default from C(REGISTRY_CA_PATH).
    type: path
  validate_certs:
    description: Verify the registry's TLS certificate. Turn off only for test registries. Default from
      C(REGISTRY_VALIDATE_CERTS), else C(true).
    type: bool
    default: true
  insecure:
    description: Talk plain HTTP to the registry. Only for registries that have no TLS at all.
    type: bool
    default: false
"""
