#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: push_progress
short_description: Wait for a push running in the background, printing its progress every few seconds
version_added: 0.2.0
description:
  - Waits for a push that M(datarobot_mlops.management_agent.pps_image) or
    M(datarobot_mlops.management_agent.daemon_image_push) started with I(background) and returns its result, as the
    module would have returned it; meanwhile, every I(interval) seconds, prints one line read from the push's
    progress file with the percent, the bytes read and in all, MB/s, the time left, and the blobs done, mounted and
    skipped (a push through a Docker API that tells none of it, as podman's, says how long it has been pushing).
    When the push ends it prints the push's summary line (archive size, bytes sent, seconds, throughput), and, for a
    push with a I(fleet), the summary line of every other registry it pushed to.
  - The lines go through Ansible's display, so they show on the command line and, under ansible-runner
    (AWX, Automation Controller), as verbose events in the job output.
  - The job's files (C(progress.json), C(result.json), C(worker.json) in I(job_dir)) are read through the
    connection with M(ansible.builtin.slurp), so a push running on a remote host is watched the same way. On the
    local connection without become (the collection's inventories) they are the controller's own files, and the
    action reads them itself, looking for the result every 0.2 seconds between two lines, so the push's end is seen
    at once and no module runs per look.
  - "Whether the worker still runs is read the same way, from C(/proc/<pid>/stat) on the host that runs the push
    (its pid and start time, so a pid taken by another process since does not count), whenever the progress did not
    move since the last look: a worker gone without a result (killed, out of memory) fails the task with a message
    that says so, instead of waiting until I(timeout). Where there is no C(/proc) (not Linux), only I(timeout) and
    the worker's own time limit end the wait."
  - This is an action plugin; the work is done on the controller.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  job_dir:
    description: The push's I(job_dir) (C(job_dir) of the registered push).
    type: str
    required: true
  interval:
    description: Seconds between two progress lines (and two looks at the job).
    type: int
    default: 5
  timeout:
    description:
      - Seconds to wait before failing. The worker stops itself at its own I(background_timeout) and reports it;
        give a little more here so that its own message is the one you read.
    type: int
    default: 7260
  remove:
    description:
      - Once the job has ended (its result read, or the push failed, timed out, or its worker is gone without a
        result; also when this wait reaches I(timeout)), remove I(job_dir) and everything in it, and return
        RV(job_dir_removed).
      - On the local connection without become the action removes it itself; otherwise it runs
        M(ansible.builtin.file) with C(state=absent) through the connection. A directory that cannot be removed is a
        warning, not a failure of the push (RV(job_dir_removed) is then false).
      - Give it for a I(job_dir) that belongs to this push only, such as the one
        M(datarobot_mlops.management_agent.pps_image) or M(datarobot_mlops.management_agent.daemon_image_push) makes
        when it is given none.
    type: bool
    default: false
    version_added: 0.2.0
attributes:
  check_mode:
    support: none
    description:
      - Skipped in check mode, changing nothing (I(remove) included). A check-mode push runs in the foreground;
        there is nothing to wait for.
  diff_mode:
    support: none
    description: Nothing to compare; the push's own result carries its diff.
  action:
    support: full
    description: An action plugin; it runs on the controller and reaches the host through the connection.
  async:
    support: none
    description: It waits for the collection's own background push, not for an Ansible async job.
notes:
  - The progress and result files hold counts, the image name and the result only, never a credential; remove
    I(job_dir) once the push is collected (I(remove)).
seealso:
  - module: datarobot_mlops.management_agent.pps_image
"""

EXAMPLES = r"""
- name: Push in the background (the module makes the job directory)
  datarobot_mlops.management_agent.pps_image:
    src: /data/datarobot-portable-prediction-api-9.2.0.tar.gz
    name: registry.example.com/datarobot/datarobot-portable-prediction-api
    tag: 9.2.0
    background: true
  register: pps_job

- name: Wait for the push, showing its progress, then remove its job directory
  datarobot_mlops.management_agent.push_progress:
    job_dir: "{{ pps_job.job_dir }}"
    remove: true
  register: pps
"""

RETURN = r"""
finished:
  description: Whether the push ended (false only when the wait itself failed).
  returned: always
  type: bool
summary:
  description: The push's summary line; the other values are those M(datarobot_mlops.management_agent.pps_image) returns.
  returned: success
  type: str
job_dir:
  description: The I(job_dir) watched.
  returned: always
  type: str
job_dir_removed:
  description: Whether I(remove) removed I(job_dir) (or found it gone already); false when I(remove) is false.
  returned: always
  type: bool
"""
