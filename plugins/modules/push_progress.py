#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: push_progress
short_description: Wait for a push running as an async job, printing its progress every few seconds
version_added: 0.2.0
description:
  - Waits for an async job of M(datarobot_mlops.management_agent.pps_image) (started with C(async) and C(poll=0))
    and returns its result, as M(ansible.builtin.async_status) in an C(until) loop would; meanwhile, every
    I(interval) seconds, prints one line read from the push's I(progress_file) with the percent, the bytes read and in
    all, MB/s, the time left, and the blobs done, mounted and skipped. When the job ends it prints the push's summary
    line (archive size, bytes sent, seconds, throughput).
  - The lines go through Ansible's display, so they show on the command line and, under ansible-runner
    (AWX, Automation Controller), as verbose events in the job output.
  - The job status and the progress file are read through the connection (C(async_status), C(slurp)), so a push
    running on a remote host is watched the same way.
  - This is an action plugin; the work is done on the controller.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  jid:
    description: The async job's id (C(ansible_job_id) of the registered push).
    type: str
    required: true
  progress_file:
    description: The push's I(progress_file). Without it, only the job's end is awaited.
    type: str
  async_dir:
    description:
      - Where the job writes its status; default the shell's C(async_dir) (C(~/.ansible_async)). Give the directory
        of the registered push's C(results_file) when C(HOME) may differ between the job and this task (containers).
    type: str
  interval:
    description: Seconds between two progress lines (and two job status checks).
    type: int
    default: 5
  timeout:
    description: Seconds to wait for the job before failing (the job itself goes on until its own C(async) limit).
    type: int
    default: 7200
attributes:
  check_mode:
    support: none
    description: Async jobs do not run in check mode; run the push in the foreground there.
  diff_mode:
    support: none
    description: Nothing to compare; the job's own result carries its diff.
  action:
    support: full
    description: An action plugin; it runs on the controller and reaches the host through the connection.
  async:
    support: none
    description: It is what waits for an async job.
notes:
  - The progress file holds counts and the image name only, never a credential; the push removes it when it ends.
seealso:
  - module: datarobot_mlops.management_agent.pps_image
"""

EXAMPLES = r"""
- name: Make a private directory for the progress file
  ansible.builtin.tempfile:
    state: directory
    prefix: pps-progress-
  register: progress_dir

- name: Push in the background
  datarobot_mlops.management_agent.pps_image:
    src: /data/datarobot-portable-prediction-api-9.2.0.tar.gz
    name: registry.example.com/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    progress_file: "{{ progress_dir.path }}/progress.json"
  async: 7200
  poll: 0
  register: pps_job

- name: Wait for the push, showing its progress
  datarobot_mlops.management_agent.push_progress:
    jid: "{{ pps_job.ansible_job_id }}"
    progress_file: "{{ progress_dir.path }}/progress.json"
    async_dir: "{{ pps_job.results_file | dirname }}"
  register: pps
"""

RETURN = r"""
finished:
  description: Whether the job ended (false only when the wait itself failed).
  returned: always
  type: bool
ansible_job_id:
  description: The job's id.
  returned: always
  type: str
summary:
  description: The push's summary line, when the job was a finished M(datarobot_mlops.management_agent.pps_image).
  returned: success
  type: str
"""
