#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: agent_deployment
short_description: Install, upgrade, repair or remove the management agent's Helm release
version_added: 0.1.0
description:
  - Reconciles the Helm release of the DataRobot MLOps management agent (C(bosun)) with the chart and values
    given, and keeps it working.
  - Compared with M(kubernetes.core.helm), it adds
    (1) B(no-op detection without upgrading) - the chart (name and version), the values helm would store and the
    manifest helm would apply (rendered with C(helm upgrade --dry-run), so local chart edits count) are compared
    with the deployed revision, and nothing runs when they are equal, so a second run creates no revision;
    (2) B(drift repair) - the release's live objects are compared with its manifest (workload images, replicas and
    container env, ConfigMap and Secret data, deleted objects); edits made by hand are reported in C(drift) and put
    back (a JSON patch of the drifted fields, or a helm upgrade when an object was deleted);
    (3) B(rollback with diagnostics) - the agent Deployments are watched through the Kubernetes API while helm
    waits, and a container stuck in a state that waiting does not cure (see I(stuck_timeout)) ends the wait early;
    when they do not become available, the failing pods, their containers' waiting reasons (C(ImagePullBackOff),
    C(CrashLoopBackOff), ...) and recent Warning events are collected before the release is rolled back to the last
    deployed revision (a failed first install is uninstalled), and reported in C(msg) and C(diagnostics). Reading
    them is best effort - when it fails (events forbidden to the user, the API server away) the rollback still runs
    and C(msg) says why they are missing; an API server that stays away past I(wait_timeout) while the Deployments
    are checked fails the upgrade as well;
    (4) B(a concurrency guard and recovery from interrupted runs) - a run that changes the release holds a
    C(coordination.k8s.io) Lease named C(<release_name>-agent-deployment) in I(release_namespace), and records there
    each revision before helm writes it. A second run finds the Lease held and fails with "Another operation is in
    progress" without touching the release. A revision left C(pending-install), C(pending-upgrade),
    C(pending-rollback) or C(uninstalling) by a run of this module that died (job cancelled, process killed, API
    server gone mid-write) is recovered by the next run - rolled back to the last deployed revision, or uninstalled
    when there is none - before it applies its own values, but only when it provably came from that run - the
    status its operation leaves, stamped by helm within 10 minutes after the run recorded it, and the run's own
    mark (a release label C(mlops.datarobot.com/write) on an upgrade's revision, with helm 3.13 or newer; helm's
    "Rollback to N" on a rollback's). A run is known dead when its process is gone (same host name, machine, boot
    and PID namespace) or its claim has expired (3 x I(wait_timeout) + 120 seconds, for a run elsewhere, e.g. a
    cancelled AWX job or another container); a run renews its claim while it holds the Lease, so a long helm
    C(--wait) never looks dead. A pending revision written by any other client (helm by hand, another tool) is
    never touched; the run fails with the command that recovers it.
  - A release named I(release_name) that holds another chart is neither upgraded nor uninstalled unless I(force).
  - Values are composed as helm does (I(values_files) in order, then I(values)) and handed to helm as one document
    on its standard input (C(--values -)), so what is compared is what is applied, and no file holding them is
    written (a killed run leaves none behind). Upgrades always pass C(--reset-values).
  - helm runs with only the environment it needs - C(PATH), C(HOME), locale, C(TMPDIR), proxies, C(SSL_CERT_*),
    C(XDG_*), C(HELM_*), C(KUBECONFIG), C(KUBECACHEDIR), the C(AWS_*), C(GOOGLE_*), C(CLOUDSDK_*), C(AZURE_*) and
    C(AAD_*) variables kubeconfig credential plugins read - and the connection options I(context), I(host),
    I(ca_cert) and I(validate_certs) as helm's variables. I(api_key) is in neither helm's environment (which every
    program helm starts would inherit) nor its command line (readable by all local users); it reaches helm inside an
    in-memory kubeconfig (Linux), the context helm would otherwise use with the token added to its user, as
    C(HELM_KUBETOKEN) would add it (where there is no in-memory file, it stays C(HELM_KUBETOKEN)). Other variables,
    and any whose value holds a secret of the values, are not passed. I(kubeconfig) is never copied to a file; given
    as a dictionary, it reaches helm in memory (Linux). I(validate_certs=false) needs helm 3.10 or newer.
  - Secrets are masked as C(********) in C(values), C(diff), C(drift), C(diagnostics) and messages - values under
    keys that look like a token, password, secret, API key or credential (not their C(...Name)/C(...Ref) siblings),
    under I(secret_value_paths), Secret data in manifests and env vars with such names - and their strings are
    hidden from Ansible's output, even at C(-vvv). The secrets of I(values) and of a I(kubeconfig) dictionary are
    hidden from the start, so also in the C(invocation) of a task whose arguments fail Ansible's validation.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
extends_documentation_fragment:
  - kubernetes.core.helm_common_options
options:
  chart_ref:
    description:
      - The chart - a local chart directory or C(.tgz) (the agent tarball's C(tools/charts/datarobot-management-agent)),
        C(repo/name) of a repository added with C(helm repo add), C(oci://...), or a chart name with I(chart_repo_url).
      - Required when I(state=present).
    type: str
  chart_version:
    description:
      - Chart version or version range for repository and OCI charts. For a local chart, an exact version is checked
        against the chart's own version.
    type: str
  chart_repo_url:
    description: URL of the chart repository, when I(chart_ref) is a chart name in it.
    type: str
  release_name:
    description: Name of the Helm release.
    type: str
    default: bosun
    aliases: [name]
  release_namespace:
    description: Namespace of the release (DataRobot installs the agent in C(datarobot-mlops)).
    type: str
    required: true
    aliases: [namespace]
  create_namespace:
    description: Create I(release_namespace) on install when it does not exist (C(helm --create-namespace)).
    type: bool
    default: false
  values:
    description:
      - Chart values; they win over I(values_files).
      - Not C(no_log) as a whole, so that C(values) and C(diff) stay readable; its secrets (see I(secret_value_paths))
        are hidden everywhere, the C(invocation) of a task that fails validation included.
    type: dict
    default: {}
    aliases: [release_values]
  values_files:
    description: Values files on the controller host, merged in order before I(values), as C(helm --values) would.
    type: list
    elements: path
    default: []
  secret_value_paths:
    description:
      - Dotted paths of further values to treat as secrets (masked everywhere), e.g. C(imageBuilder.extraArgs).
        Keys that look like a token, password, secret or API key are masked without being listed.
    type: list
    elements: str
    default: []
  state:
    description: C(present) installs, upgrades or repairs the release; C(absent) uninstalls it.
    type: str
    choices: [present, absent]
    default: present
  wait:
    description:
      - Wait until the release's Deployments are available (helm C(--wait), then checked through the Kubernetes API).
        Without waiting, a rollout that never becomes available is neither detected nor rolled back.
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to wait for the Deployments (and for a rollback or uninstall).
      - Whole seconds (C(600)) or a duration string as kubernetes.core's C(helm) module and helm's C(--timeout)
        take it, such as C(90s), C(10m), C(1h30m), C(1.5h) (units C(h), C(m), C(s), C(ms), C(us), C(ns); a fraction
        of a second is rounded up).
    type: raw
    default: 300
  stuck_timeout:
    description:
      - While helm waits for an install or upgrade, seconds a container of the release's Deployments may stay waiting
        in C(ImagePullBackOff)/C(ErrImagePull), C(InvalidImageName), C(CreateContainerConfigError),
        C(CreateContainerError) or C(CrashLoopBackOff) before the run stops waiting - helm is cancelled, which marks the
        revision failed - and fails (rolling back when I(atomic)) with the diagnostics, instead of waiting out
        I(wait_timeout).
      - C(0) waits the whole I(wait_timeout), as helm alone does. Only used with I(wait=true).
      - Whole seconds (C(600)) or a duration string as kubernetes.core's C(helm) module and helm's C(--timeout)
        take it, such as C(90s), C(10m), C(1h30m), C(1.5h) (units C(h), C(m), C(s), C(ms), C(us), C(ns); a fraction
        of a second is rounded up).
    type: raw
    default: 60
  atomic:
    description:
      - When an install or upgrade fails, roll back to the last deployed revision, or uninstall a release that never
        deployed. With C(false) the failed revision is left in place and the message says how to go back.
    type: bool
    default: true
    aliases: [rollback_on_failure]
  force:
    description:
      - Upgrade (or with I(state=absent) uninstall) a release named I(release_name) even when it holds another chart
        than the agent's. Without it such a release is left alone and the run fails, naming the chart found and
        the chart wanted.
      - The chart wanted is the one I(chart_ref) names; with I(state=absent) and no I(chart_ref), it is
        C(datarobot-management-agent).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads the release and the live objects and renders the chart with C(helm upgrade --dry-run); reports
      what would be installed, upgraded, repaired or removed and changes nothing.
  diff_mode:
    support: full
    description: Shows the values and the rendered manifest before and after, and each drifted field live and desired,
      with secrets masked.
  idempotent:
    support: full
    description: A second run with the same arguments reports C(changed=false) and creates no helm revision.
  action_group:
    support: full
    description: Use C(group/datarobot_mlops.management_agent.management_agent) or
      C(group/datarobot_mlops.management_agent.helm) in C(module_defaults) to set defaults for this module.
      C(group/datarobot_mlops.management_agent.helm) also takes in the C(kubernetes.core.helm) modules, so one set
      of auth defaults reaches both; C(group/kubernetes.core.helm) alone does not reach this module.
    membership:
      - datarobot_mlops.management_agent.management_agent
      - datarobot_mlops.management_agent.helm
requirements:
  - helm 3.8.0 or later 3.x, or helm 4.x (3.13 or later renders check mode with the cluster's capabilities)
  - kubernetes >= 24.2.0
  - PyYAML
notes:
  - Drift is checked for the fields the agent depends on, not for every field of every object. Fields the chart
    does not set (such as annotations added by other controllers) are never drift.
  - A chart whose templates use C(.Release.Revision) or C(.Release.IsUpgrade) renders differently on every upgrade
    and is therefore upgraded on every run.
seealso:
  - module: kubernetes.core.helm
"""

EXAMPLES = r"""
- name: The management agent, from the chart in the agent tarball
  datarobot_mlops.management_agent.agent_deployment:
    chart_ref: /opt/datarobot/mlops-agent/tools/charts/datarobot-management-agent
    release_namespace: datarobot-mlops
    values_files:
      - /opt/datarobot/mlops-agent/tools/charts/datarobot-management-agent/examples/AWS_values.yaml
    values:
      datarobot:
        dataRobotUrl: https://app.datarobot.com
        apiSecretName: mlops-api-key
        predictionEnvId: "{{ environment.id }}"
      managementAgent:
        repository: 123456789012.dkr.ecr.us-east-1.amazonaws.com/datarobot/mlops-management-agent
        tag: 9.2.0
    wait_timeout: 600
  register: agent

- name: Show what an upgrade would change, without changing anything
  datarobot_mlops.management_agent.agent_deployment:
    chart_ref: datarobot/datarobot-management-agent
    chart_version: 1.2.0
    release_namespace: datarobot-mlops
    values: "{{ agent_values }}"
  check_mode: true
  diff: true

- name: Remove the agent
  datarobot_mlops.management_agent.agent_deployment:
    release_namespace: datarobot-mlops
    state: absent
"""

RETURN = r"""
status:
  description: The release after the run (before it in check mode); empty when it does not exist.
  returned: always
  type: dict
  contains:
    name: {description: Release name., type: str, sample: bosun}
    namespace: {description: Release namespace., type: str, sample: datarobot-mlops}
    revision: {description: Helm revision., type: int, sample: 3}
    chart: {description: Chart name and version., type: str, sample: datarobot-management-agent-1.2.0}
    app_version: {description: The chart's appVersion., type: str, sample: 9.2.0}
    status: {description: Helm status of the revision., type: str, sample: deployed}
    updated: {description: When the revision was written., type: str}
    description: {description: Helm's description of the revision., type: str}
values:
  description: The values the release holds (or would hold), secrets masked.
  returned: when state is present
  type: dict
operation:
  description:
    - What was (or in check mode would be) done - C(none), C(install), C(upgrade), C(repair), C(uninstall), or
      C(recover) (a revision an interrupted run left pending was rolled back or uninstalled, and nothing else was
      needed).
  returned: always
  type: str
  sample: upgrade
reasons:
  description: Why the release was installed, upgraded or recovered.
  returned: always
  type: list
  elements: str
  sample: ["values differ"]
drift:
  description: Fields of live objects that differed from the release's manifest (found before repairing them).
  returned: always
  type: list
  elements: dict
  contains:
    object: {description: Kind and name., type: str, sample: Deployment/bosun-management-agent}
    field: {description: The field., type: str, sample: "spec.template.spec.containers[agent].image"}
    live: {description: Its live value (C((absent)) when missing)., type: raw}
    desired: {description: Its value in the manifest., type: raw}
diagnostics:
  description: Why the release's Deployments did not become available, collected before rolling back.
  returned: on failure, when a new revision was created and they could be read (else C(msg) says why not)
  type: dict
  contains:
    deployments:
      description: Each unavailable Deployment with its state and failing conditions.
      type: list
    pods:
      description: Each pod that is not ready - its phase, node, and each container's waiting or termination reason.
      type: list
    events:
      description: Recent Warning events of those Deployments, their ReplicaSets and pods.
      type: list
"""

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._k8s_module import MlopsK8sModule
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_module import (
    ReleaseArgumentsModule,
    run_agent_deployment,
)
from ansible_collections.kubernetes.core.plugins.module_utils.helm_args_common import (
    HELM_AUTH_ARG_SPEC,
    HELM_AUTH_MUTUALLY_EXCLUSIVE,
)

ARGUMENT_SPEC = dict(
    HELM_AUTH_ARG_SPEC,
    chart_ref=dict(type="str"),
    chart_version=dict(type="str"),
    chart_repo_url=dict(type="str"),
    release_name=dict(type="str", default="bosun", aliases=["name"]),
    release_namespace=dict(type="str", required=True, aliases=["namespace"]),
    create_namespace=dict(type="bool", default=False),
    values=dict(type="dict", default={}, aliases=["release_values"]),
    values_files=dict(type="list", elements="path", default=[]),
    secret_value_paths=dict(type="list", elements="str", default=[], no_log=False),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="raw", default=300),
    stuck_timeout=dict(type="raw", default=60),
    atomic=dict(type="bool", default=True, aliases=["rollback_on_failure"]),
    force=dict(type="bool", default=False),
)


def main() -> None:
    module = MlopsK8sModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, module_class=ReleaseArgumentsModule,
                            mutually_exclusive=HELM_AUTH_MUTUALLY_EXCLUSIVE,
                            required_if=[("state", "present", ("chart_ref",))])
    run_agent_deployment(module)


if __name__ == "__main__":
    main()
