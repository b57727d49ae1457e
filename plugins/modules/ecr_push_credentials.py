#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ecr_push_credentials
short_description: Short-lived push credentials for Amazon ECR, for the collection's own image pushes
version_added: 0.1.0
description:
  - Asks ECR for an authorization token (C(GetAuthorizationToken)) and returns it as the registry host, user name
    and password that M(datarobot_mlops.management_agent.pps_image) pushes with, the way C(aws ecr get-login-password)
    does for C(docker login). The token is valid for 12 hours.
  - The password is a secret, so register the result with C(no_log=true).
  - The in-cluster image builder does not use these credentials; it gets its own through IRSA and C(ecr-login).
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  registry_id:
    description: AWS account id of the registry; the caller's account when not given.
    type: str
extends_documentation_fragment:
  - datarobot_mlops.management_agent.read_only.token
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  action_group:
    support: full
    description: Use C(group/datarobot_mlops.management_agent.aws) in C(module_defaults) to set defaults for this
      module. C(group/datarobot_mlops.management_agent.aws) also takes in the C(amazon.aws.aws) modules, so one set
      of auth defaults reaches both; C(group/amazon.aws.aws) alone does not reach this module.
    membership:
      - datarobot_mlops.management_agent.aws
"""

EXAMPLES = r"""
- name: Push credentials for ECR
  datarobot_mlops.management_agent.ecr_push_credentials:
    region: us-east-1
  register: ecr
  no_log: true
"""

RETURN = r"""
registry:
  description: The registry host, C(<account>.dkr.ecr.<region>.amazonaws.com).
  returned: success
  type: str
  sample: 123456789012.dkr.ecr.us-east-1.amazonaws.com
username:
  description: User name to push with (C(AWS)).
  returned: success
  type: str
  sample: AWS
password:
  description: The token to push with. Secret.
  returned: success
  type: str
expires_at:
  description: When the token expires (ISO 8601).
  returned: success
  type: str
  sample: "2026-11-26T03:00:00+00:00"
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._ecr_credentials import (
    EcrTokenError,
    credentials_from_token,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with

try:
    import botocore
except ImportError:  # AnsibleAWSModule reports the missing library
    pass


def _authorization_data(module: AnsibleAWSModule) -> list:
    """ECR's answer; an AWS failure goes through fail_json_aws, which adds the error code and request id."""
    client = module.client("ecr")
    kwargs = {"registryIds": [module.params["registry_id"]]} if module.params["registry_id"] else {}
    try:
        answer = client.get_authorization_token(**kwargs)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        module.fail_json_aws(exc, msg="Could not get an ECR authorization token: check the AWS credentials, the region, "
                                      "and that the caller may call ecr:GetAuthorizationToken")
    return answer.get("authorizationData") or []


def push_credentials(module: AnsibleAWSModule) -> dict:
    """The registry login ECR's token gives; the module's return values."""
    data = _authorization_data(module)
    if not data:
        raise EcrTokenError("ECR returned no authorization data; check registry_id and the region")
    credentials = credentials_from_token(data[0])
    return dict(changed=False, registry=credentials.registry, username=credentials.username,
                password=credentials.password, expires_at=credentials.expires_at)


def main() -> None:
    module = AnsibleAWSModule(argument_spec={"registry_id": {"type": "str"}}, supports_check_mode=True)
    exit_with(module, lambda: push_credentials(module))


if __name__ == "__main__":
    main()
