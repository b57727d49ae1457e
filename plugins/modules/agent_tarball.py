#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: agent_tarball
short_description: Unpack the DataRobot MLOps agent tarball into a cache, safely, once
version_added: 0.1.0
description:
  - Makes the agent tarball (C(datarobot-mlops-agent-<version>.tar.gz)) usable by the collection's roles. It unpacks
    it into C(<cache_dir>/<first 16 hex digits of its sha256>/) unless an earlier run did, and returns the directory
    that holds C(tools/) and the management agent chart C(tools/charts/datarobot-management-agent) in it.
  - Every member is checked before anything is written. Absolute names, C(..) components, devices and FIFOs,
    members below a symbolic link, and symbolic or hard links that lead outside the extraction directory are
    refused. Where Python has the tar extraction filters, the C(data) filter checks again while extracting.
  - A truncated or corrupt download, or an archive without C(tools/charts/datarobot-management-agent/Chart.yaml),
    fails with a message saying so; nothing is left in the cache.
  - The tree is unpacked into a temporary directory and renamed into place, so the cache holds a complete tree or
    none, also when several hosts of a play unpack the same tarball at once.
  - M(ansible.builtin.unarchive) is not used because for tar archives it leaves safety to the tar program (GNU tar
    drops a leading C(/) and skips C(..) members, but writes symbolic links pointing anywhere), and it compares the
    whole archive with the destination on every run.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  src:
    description: The agent tarball (C(.tar.gz), or plain C(.tar)). Mutually exclusive with I(path).
    type: path
  path:
    description:
      - A directory the tarball was already extracted into (the directory holding C(tools/), or its parent with one
        such top directory). Used as it is; nothing is written. Mutually exclusive with I(src).
    type: path
  cache_dir:
    description: Where tarballs are unpacked, one directory per tarball checksum.
    type: path
    default: ~/.cache/datarobot_mlops/agent
attributes:
  check_mode:
    support: partial
    description: Checks the tarball, but does not unpack it.
    details:
      - When the cache does not hold the tarball yet, C(changed=true) and I(chart_path) names where the chart would
        be.
      - The C(agent_tarball) role runs this module with C(check_mode=false) so that later check-mode tasks can read
        the chart; the cache is a controller-side artefact, not a change to a cluster or registry.
  diff_mode:
    support: none
    description: Nothing to show beyond I(path).
  idempotent:
    support: full
    description: A second run with the same tarball finds it in the cache and reports C(changed=false).
notes:
  - Runs where the play's host runs; with this collection's inventories that is the controller.
"""

EXAMPLES = r"""
- name: Unpack the agent tarball
  datarobot_mlops.management_agent.agent_tarball:
    src: /data/datarobot-mlops-agent-9.2.0.tar.gz
  register: agent

- name: Use the chart
  ansible.builtin.debug:
    msg: "{{ agent.chart_path }} (appVersion {{ agent.app_version }})"
"""

RETURN = r"""
path:
  description: The directory holding C(tools/) (the tarball's top directory).
  returned: always
  type: str
  sample: /home/me/.cache/datarobot_mlops/agent/3f2a9c0d41b7e8aa/datarobot-mlops-agent-9.2.0
chart_path:
  description: The management agent chart, C(<path>/tools/charts/datarobot-management-agent).
  returned: always
  type: str
chart_version:
  description: C(version) of the chart's C(Chart.yaml) (empty in check mode before the first unpack).
  returned: always
  type: str
  sample: 1.2.0
app_version:
  description: C(appVersion) of the chart, the agent version (empty in check mode before the first unpack).
  returned: always
  type: str
  sample: 9.2.0
checksum:
  description: C(sha256:<hex>) of the tarball; empty for I(path).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._agent_tarball import unpack
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path"),
            path=dict(type="path"),
            cache_dir=dict(type="path", default="~/.cache/datarobot_mlops/agent"),
        ),
        mutually_exclusive=[("src", "path")],
        required_one_of=[("src", "path")],
        supports_check_mode=True,
    )
    params = module.params
    exit_with(module, lambda: unpack(params["src"], params["path"], params["cache_dir"], module.check_mode))


if __name__ == "__main__":
    main()
