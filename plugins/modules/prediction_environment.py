#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: prediction_environment
short_description: DataRobot prediction environment for the management agent, as code
version_added: 0.1.0
description:
  - Creates, updates or deletes a DataRobot prediction environment by its exact name (or I(id)), instead of
    creating it in the DataRobot UI and copying its ID. The returned C(id) is the chart's C(datarobot.predictionEnvId).
  - Description, model formats and the management-agent flag are updated in place. A different I(platform) is not
    changed in place; the module fails and shows the difference unless I(recreate=true).
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
extends_documentation_fragment:
  - datarobot_mlops.management_agent.datarobot_auth
options:
  name:
    description: Exact name of the environment. Required unless I(id) is given.
    type: str
  id:
    description: Id of an existing environment to manage instead of finding it by name.
    type: str
  state:
    description: Whether the environment should exist.
    type: str
    choices: [present, absent]
    default: present
  platform:
    description:
      - Where models run. The roles pass C(openShift) on OpenShift, C(aws)/C(azure)/C(gcp) for those vendors and
        C(other) elsewhere.
    type: str
    choices: [aws, gcp, azure, onPremise, datarobot, datarobotServerless, openShift, other, snowflake, sapAiCore]
    default: other
  description:
    description: Free text; left as it is when not given.
    type: str
  supported_model_formats:
    description: Model formats the environment takes. The management agent supports only C(datarobot) and C(customModel).
    type: list
    elements: str
    default: [datarobot, customModel]
  managed_by_management_agent:
    description: Mark the environment as managed by the management agent.
    type: bool
    default: true
  recreate:
    description: Replace the environment when a field that cannot be changed in place (I(platform)) differs.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads only, and reports what would be created, updated or deleted.
  diff_mode:
    support: full
    description: Shows the managed fields before and after.
  idempotent:
    support: full
    description: A second run with the same arguments reports C(changed=false).
  action_group:
    support: full
    description: Use C(group/datarobot_mlops.management_agent.datarobot) in C(module_defaults) to set defaults for
      this module.
    membership:
      - datarobot_mlops.management_agent.datarobot
requirements:
  - requests
"""

EXAMPLES = r"""
- name: The environment the agent deploys into
  datarobot_mlops.management_agent.prediction_environment:
    name: k8s-prod-eks
    platform: aws
    description: Management agent on EKS prod
  register: environment

- name: Remove it
  datarobot_mlops.management_agent.prediction_environment:
    name: k8s-prod-eks
    state: absent
"""

RETURN = r"""
id:
  description: Id of the environment (the chart's C(datarobot.predictionEnvId)); empty when absent or not yet created
    in check mode.
  returned: always
  type: str
  sample: 65f1c2a9e4b0a1b2c3d4e5f6
prediction_environment:
  description: The environment as the API returns it.
  returned: when present
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._datarobot_client import (
    DATAROBOT_AUTH_ARGUMENT_SPEC,
    ENDPOINT_ENV,
    HAS_REQUESTS,
    TOKEN_ENV,
    DataRobotClient,
    api_base,
    env_token_problem,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._duration import to_seconds
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._prediction_environment import (
    Desired,
    InvalidEnvironmentRequest,
    PredictionEnvironments,
    check_formats,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._secret_env import (
    raise_unreadable_secret_files,
    supplied_by_environment,
)

PLATFORMS = ["aws", "gcp", "azure", "onPremise", "datarobot", "datarobotServerless", "openShift", "other", "snowflake",
             "sapAiCore"]

ARGUMENT_SPEC = dict(
    name=dict(type="str"),
    id=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    platform=dict(type="str", choices=PLATFORMS, default="other"),
    description=dict(type="str"),
    supported_model_formats=dict(type="list", elements="str", default=["datarobot", "customModel"]),
    managed_by_management_agent=dict(type="bool", default=True),
    recreate=dict(type="bool", default=False),
    **DATAROBOT_AUTH_ARGUMENT_SPEC,
)


def manage(module: AnsibleModule) -> dict:
    """Make the environment what the parameters say; the module's return values."""
    params = module.params
    raise_unreadable_secret_files()
    for required, env in (("endpoint", "DATAROBOT_ENDPOINT"), ("api_token", "DATAROBOT_API_TOKEN or DATAROBOT_API_TOKEN_FILE")):
        if not params[required]:
            raise InvalidEnvironmentRequest(f"{required} is required: pass it or set {env}.")
    if not params["name"] and not params["id"]:  # required_one_of takes an empty string for a given value
        raise InvalidEnvironmentRequest("Give the prediction environment's name, or its id: both are empty.")
    if params["state"] == "present":
        check_formats(params["supported_model_formats"])  # before any call
    api_base(params["endpoint"], params["allow_insecure_http"])  # a malformed endpoint is named as such first
    if supplied_by_environment(TOKEN_ENV):  # the environment's token goes to the environment's endpoint only
        problem = env_token_problem(params["endpoint"], os.environ.get(ENDPOINT_ENV, ""))
        if problem:
            raise InvalidEnvironmentRequest(problem)
    verify = (params["ca_path"] or True) if params["validate_certs"] else False
    client = DataRobotClient(params["endpoint"], params["api_token"], verify=verify,
                             timeout=to_seconds(params["timeout"], "timeout"),
                             allow_insecure_http=params["allow_insecure_http"])
    environments = PredictionEnvironments(client, module.check_mode)
    if params["state"] == "present":
        name = params["name"] or environments.find(None, params["id"])["name"]
        desired = Desired(name, params["platform"], params["description"], params["supported_model_formats"],
                          params["managed_by_management_agent"])
        change = environments.present(desired, params["id"], params["recreate"])
    else:
        change = environments.absent(params["name"], params["id"])
    result = dict(changed=change.changed, id=(change.environment or {}).get("id", ""))
    if change.environment:
        result["prediction_environment"] = change.environment
    if module._diff:
        result["diff"] = dict(before=change.before, after=change.after)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_one_of=[("name", "id")], supports_check_mode=True)
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"))
    exit_with(module, lambda: manage(module))


if __name__ == "__main__":
    main()
