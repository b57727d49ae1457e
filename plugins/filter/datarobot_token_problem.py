# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: datarobot_token_problem
short_description: Say why the environment's DataRobot API token must not go to an endpoint
version_added: 0.1.0
description:
  - The AWX DataRobot credential gives its API token (C(DATAROBOT_API_TOKEN_FILE)) together with its endpoint
    (C(DATAROBOT_ENDPOINT)); a survey answer or an inventory may name another endpoint. The roles use this filter, the
    same rule as the prediction_environment module, to keep that token for its own DataRobot.
  - Endpoints compare by scheme, host and port (C(https://app.datarobot.com) and
    C(https://app.datarobot.com/api/v2) are one DataRobot); one written without a scheme counts as C(https://).
  - Without an endpoint in the environment the token is bound to none (a token exported by hand), except that it
    never goes to an endpoint an AWX survey chose at launch; an empty endpoint means the environment's own.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  _input:
    description: The endpoint the token would go to (the roles' C(mlops_datarobot_endpoint)).
    type: str
    required: true
  env_endpoint:
    description: The endpoint the token belongs to (C(DATAROBOT_ENDPOINT)).
    type: str
    required: true
  survey_endpoint:
    description:
      - The endpoint an AWX survey answered (C(mlops_survey_datarobot_endpoint)), chosen by whoever launches the job.
      - A token the environment does not bind to an endpoint (an AWX credential made without one) is never sent
        there.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Keep the environment's API token for its own DataRobot
  ansible.builtin.assert:
    that: problem | length == 0
    fail_msg: "{{ problem }}"
  vars:
    problem: >-
      {{ mlops_datarobot_endpoint | datarobot_mlops.management_agent.datarobot_token_problem(
           lookup('ansible.builtin.env', 'DATAROBOT_ENDPOINT'), mlops_survey_datarobot_endpoint | default('', true)) }}
"""

RETURN = r"""
_value:
  description: Why the token must not go to the endpoint, and what to do instead; an empty string when it may.
  type: str
"""

from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._datarobot_client import (
    env_token_problem,
)


def datarobot_token_problem(endpoint: Any, env_endpoint: Any, survey_endpoint: Any = "") -> str:
    return env_token_problem(str(endpoint or ""), str(env_endpoint or ""), str(survey_endpoint or ""))


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"datarobot_token_problem": datarobot_token_problem}
