#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gar_push_credentials
short_description: Short-lived push credentials for Google Artifact Registry, for the collection's own image pushes
version_added: 0.1.0
description:
  - Mints a Google OAuth 2.0 access token with Google's auth library (C(google-auth)) and returns it as the user
    name (C(oauth2accesstoken)) and password that M(datarobot_mlops.management_agent.pps_image) pushes to Artifact
    Registry (C(REGION-docker.pkg.dev)) or Container Registry with, the way C(gcloud auth print-access-token) does
    for C(docker login). The token is valid for about an hour, so mint it on every run instead of keeping one in a
    vault; a scheduled run (AWX) then never pushes with an expired token.
  - The credentials come from I(credentials) (a service-account key's JSON), else I(credentials_file) (a
    service-account key file), else Application Default Credentials (C(GOOGLE_APPLICATION_CREDENTIALS), C(gcloud
    auth application-default login), or the metadata server of a GCE/GKE machine).
  - A service-account key is exchanged at the key's own C(token_uri) (a JWT signed with its private key).
  - The password is a secret, so register the result with C(no_log=true).
  - The in-cluster image builder does not use these credentials; on GKE it gets its own through Workload Identity.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
requirements:
  - google-auth >= 2.0.0
  - requests
options:
  credentials:
    description:
      - The JSON content of a service-account key (e.g. from Ansible Vault or an AWX credential). Secret.
      - Takes precedence over I(credentials_file).
    type: str
  credentials_file:
    description:
      - Path of a service-account key file on the host that runs the module.
      - When neither this nor I(credentials) is given, Application Default Credentials are used.
    type: path
  scopes:
    description: OAuth scopes of the token.
    type: list
    elements: str
    default: [https://www.googleapis.com/auth/cloud-platform]
extends_documentation_fragment:
  - datarobot_mlops.management_agent.read_only.token
attributes:
  action_group:
    support: full
    description: Use C(group/datarobot_mlops.management_agent.gcp) in C(module_defaults) to set defaults for this module.
    membership:
      - datarobot_mlops.management_agent.gcp
"""

EXAMPLES = r"""
- name: Push credentials for Artifact Registry, from Application Default Credentials
  datarobot_mlops.management_agent.gar_push_credentials:
  register: gar
  no_log: true

- name: The same from a service-account key file
  datarobot_mlops.management_agent.gar_push_credentials:
    credentials_file: /etc/mlops/gar-push-key.json
  register: gar
  no_log: true

- name: Push the PPS image with it
  datarobot_mlops.management_agent.pps_image:
    src: /data/datarobot-portable-prediction-api-9.2.0.tar.gz
    name: us-central1-docker.pkg.dev/my-project/mlops/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    username: "{{ gar.username }}"
    password: "{{ gar.password }}"
"""

RETURN = r"""
username:
  description: User name to push with (C(oauth2accesstoken)).
  returned: success
  type: str
  sample: oauth2accesstoken
password:
  description: The access token to push with. Secret.
  returned: success
  type: str
expires_at:
  description: When the token expires (ISO 8601, UTC).
  returned: success
  type: str
  sample: "2026-11-26T03:00:00+00:00"
source:
  description: Where the credentials came from.
  returned: success
  type: str
  sample: application_default
  choices: [credentials, credentials_file, application_default]
service_account:
  description: The service account the token belongs to, when known (empty for a user's own credentials).
  returned: success
  type: str
  sample: gar-push@my-project.iam.gserviceaccount.com
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._gar_credentials import (
    DEFAULT_SCOPES,
    HAS_GOOGLE_AUTH,
    mint,
)


def push_credentials(module: AnsibleModule) -> dict:
    """The module's return values: a freshly minted token."""
    params = module.params
    credentials = mint(params["credentials"], params["credentials_file"], params["scopes"])
    return dict(changed=False, username=credentials.username, password=credentials.password,
                expires_at=credentials.expires_at, source=credentials.source,
                service_account=credentials.service_account)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "credentials": {"type": "str", "no_log": True},
            "credentials_file": {"type": "path"},
            "scopes": {"type": "list", "elements": "str", "default": list(DEFAULT_SCOPES)},
        },
        supports_check_mode=True,
    )
    if not HAS_GOOGLE_AUTH:
        module.fail_json(msg=missing_required_lib("google-auth"))
    exit_with(module, lambda: push_credentials(module))


if __name__ == "__main__":
    main()
