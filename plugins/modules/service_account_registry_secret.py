#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: service_account_registry_secret
short_description: A registry login secret holding a ServiceAccount's token, renewed without churn
version_added: 0.1.0
description:
  - Writes a C(kubernetes.io/dockerconfigjson) secret whose password is a token of a ServiceAccount, the way the
    management agent's image builder logs in to OpenShift's integrated registry (the ServiceAccount's own dockercfg
    secret has a format Kaniko does not read).
  - The token comes from the TokenRequest API with a lifetime of I(token_lifetime), or, with I(token_source=auto)
    on clusters that still create them, from the non-expiring legacy token secret named by the ServiceAccount's
    dockercfg secret (annotation C(openshift.io/token-secret.name)).
  - The secret is left alone while its token belongs to the ServiceAccount (its subject, and the ServiceAccount's uid
    where the token names one, so that a ServiceAccount deleted and created again gets a new token), is accepted by
    the API server (a TokenReview, when the caller may create C(tokenreviews); without that cluster-wide permission
    the token's claims decide) and expires later than I(renew_before) from now. Re-running the task
    therefore changes nothing until the token is due; run it more often than I(renew_before) (e.g. from a
    scheduled AWX job) so the image builder never holds an expired token.
  - A secret of that name with another type is deleted and written again only when this module made it (its
    annotation C(datarobot-mlops/token-source)), and only as it was read; any other fails the task, naming it.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
extends_documentation_fragment:
  - datarobot_mlops.management_agent.action_group.k8s
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace of the ServiceAccount and the secret.
    type: str
    required: true
  service_account:
    description: The ServiceAccount whose token logs in. It must exist.
    type: str
    required: true
  name:
    description: Name of the secret (the chart's C(imageBuilder.secretName)).
    type: str
    default: registry-creds
  registries:
    description: Registry hosts the login is for, e.g. C(image-registry.openshift-image-registry.svc:5000).
    type: list
    elements: str
    required: true
  registry_username:
    description:
      - User name in the login; OpenShift's registry ignores it but it must not be empty.
      - Formerly C(username), which is the Kubernetes API's user name (with I(password)), as in every
        C(kubernetes.core) module.
    type: str
    default: serviceaccount
  token_source:
    description: C(auto) prefers a legacy token secret when one exists, else TokenRequest; C(token_request) always
      requests a bounded token.
    type: str
    choices: [auto, token_request]
    default: auto
  token_lifetime:
    description: Seconds a requested token lives. The API server may shorten it (C(--service-account-max-token-expiration)).
    type: int
    default: 7776000
  renew_before:
    description: Replace the token when it expires within this many seconds.
    type: int
    default: 2592000
  unverified_registries:
    description:
      - Hosts among I(registries) whose certificate the login's user does not verify (Kaniko with
        C(skip-tls-verify)), so that anything answering for them receives the token.
      - The module warns (an Ansible warning) once for each of them, in check mode too; it writes the same secret.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: Decides from the existing secret and reports whether it would be written; requests no token.
  diff_mode:
    support: full
    description: The login before and after, passwords masked, with the token's expiry.
  idempotent:
    support: full
    description: C(changed=false) while the stored token is valid and not due for renewal.
"""

EXAMPLES = r"""
- name: Kaniko's login to the integrated registry
  datarobot_mlops.management_agent.service_account_registry_secret:
    namespace: datarobot-mlops
    service_account: datarobot-management-agent-image-builder
    registries: [image-registry.openshift-image-registry.svc:5000]
"""

RETURN = r"""
reason:
  description: Why the secret was (or would be) written, or why it was left alone.
  returned: always
  type: str
  sample: the stored token expires at 2026-12-01T10:00:00+00:00
expires_at:
  description: When the token in the secret expires (ISO 8601); empty for a non-expiring legacy token, or in check
    mode when a new token would be requested.
  returned: always
  type: str
token_source:
  description: Where a newly written token came from (C(token_request) or C(legacy_secret)); C(existing) when kept.
  returned: always
  type: str
"""

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._k8s_module import MlopsK8sModule
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._memory_files import (
    keep_kube_credentials_in_memory,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._service_account_token import (
    Renewal,
    renew_registry_secret,
)
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC

ARGUMENT_SPEC = dict(
    AUTH_ARG_SPEC,
    namespace=dict(type="str", required=True),
    service_account=dict(type="str", required=True),
    name=dict(type="str", default="registry-creds"),
    registries=dict(type="list", elements="str", required=True),
    registry_username=dict(type="str", default="serviceaccount"),
    token_source=dict(type="str", choices=["auto", "token_request"], default="auto"),
    token_lifetime=dict(type="int", default=7776000, no_log=False),
    renew_before=dict(type="int", default=2592000),
    unverified_registries=dict(type="list", elements="str", default=[]),
)


def main() -> None:
    module = MlopsK8sModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)

    def connect():
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client

        keep_kube_credentials_in_memory()  # a killed run leaves no file with the kubeconfig's key behind
        return get_api_client(module=module)

    def action():
        renewal = Renewal.from_params(module.params)
        for warning in renewal.warnings():
            module.warn(warning)
        return renew_registry_secret(connect, renewal, module.check_mode, module._diff)

    module.run(action)


if __name__ == "__main__":
    main()
