#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: build_progress
short_description: Wait for image builds running as async jobs, printing a line per build every few seconds
version_added: 0.2.0
description:
  - Waits for async jobs that build and push an image with C(docker build) and C(docker push) (such as the vendor
    Makefile's C(make push), started with C(async) and C(poll=0), its output redirected into a log file), and
    returns what each did. Meanwhile, every I(interval) seconds, prints one line per running build, read from its
    log, for example C(registry.example.com/datarobot/mlops-management-agent:9.2.0 building, step 5 of 12, 1m20s) or
    C(... pushing, 3 of 8 layers done (1 mounted, 2 already there), 1m40s). When a build ends it prints its summary
    line (time taken, build steps, layers).
  - "What the log can tell: build steps (the classic builder's C(Step n/m), podman's C(STEP n/m:), BuildKit's
    C(#N [n/m])), the build's end, the push's layers as Docker names them (Pushed, Layer already exists, Mounted
    from) and the pushed digest. podman's Docker API names no layers, so its push lines say only C(pushing). No
    bytes, rate or time left: the docker CLI prints byte counts only to a terminal, never into a log."
  - A failed build fails the task with the image's name and the last lines of its log, after every other build
    ended.
  - The lines go through Ansible's display, so they show on the command line and, under ansible-runner (AWX,
    Automation Controller), as verbose events in the job output.
  - Job status and logs are read through the connection (C(async_status), C(slurp)); each log is read whole at
    every line. The jobs' status files are removed once read.
  - This is an action plugin; the work is done on the controller.
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  jobs:
    description: The builds to wait for.
    type: list
    elements: dict
    required: true
    suboptions:
      jid:
        description: The async job's id (C(ansible_job_id) of the registered task).
        type: str
        required: true
      image:
        description: The image being built, as the lines name it.
        type: str
        required: true
      log:
        description: The file the job's output goes to.
        type: str
        required: true
      key:
        description: A name for the build, returned as is in RV(builds).
        type: str
        default: ""
      async_dir:
        description:
          - Where the job writes its status; default the shell's C(async_dir) (C(~/.ansible_async)). Give the
            directory of the registered job's C(results_file) when C(HOME) may differ between the job and this task.
        type: str
  interval:
    description: Seconds between two rounds of lines (and job status checks).
    type: int
    default: 5
  timeout:
    description: Seconds to wait for the jobs before failing (a job goes on until its own C(async) limit).
    type: int
    default: 3600
attributes:
  check_mode:
    support: none
    description:
      - Skipped in check mode, changing nothing (the jobs' status files are kept). Async jobs do not run in check
        mode; there is nothing to wait for.
  diff_mode:
    support: none
    description: Nothing to compare.
  action:
    support: full
    description: An action plugin; it runs on the controller and reaches the host through the connection.
  async:
    support: none
    description: It is what waits for async jobs.
notes:
  - "Give the jobs no secret in their command line or environment, and log in beforehand (a private
    C(DOCKER_CONFIG)): an async job's module file stays on disk while it runs."
seealso:
  - module: datarobot_mlops.management_agent.push_progress
"""

EXAMPLES = r"""
- name: A private directory for the build logs
  ansible.builtin.tempfile:
    state: directory
    prefix: image-builds-
  register: logs

- name: Start the builds (make's command line holds no secret)
  ansible.builtin.command:
    argv: [/bin/sh, -c, 'umask 077; exec >"$1" 2>&1; shift; exec "$@"', sh, "{{ logs.path }}/{{ item }}.log",
           make, -C, "/opt/agent/tools/{{ item }}", push, REGISTRY=registry.example.com, VERSION=9.2.0]
  loop: [bosun_docker, agent_docker]
  async: 3600
  poll: 0
  register: started

- name: Build and push, a line per image every few seconds
  datarobot_mlops.management_agent.build_progress:
    jobs: >-
      {%- set jobs = [] -%}
      {%- for job in started.results -%}
      {%- set _ = jobs.append({'jid': job.ansible_job_id, 'key': job.item, 'log': logs.path ~ '/' ~ job.item ~ '.log',
                               'image': 'registry.example.com/datarobot/' ~ job.item ~ ':9.2.0'}) -%}
      {%- endfor -%}
      {{ jobs }}
    interval: 5
  register: built
"""

RETURN = r"""
builds:
  description: One entry per job, in the order given.
  returned: when every job ended
  type: list
  elements: dict
  contains:
    key:
      description: The job's I(key).
      type: str
    image:
      description: The job's I(image).
      type: str
    changed:
      description: Whether it ended well (exit status 0).
      type: bool
    failed:
      description: Whether it failed.
      type: bool
    rc:
      description: The job's exit status.
      type: int
    seconds:
      description: Its run time.
      type: float
    steps:
      description: Build steps its log named (0 when none).
      type: int
    layers:
      description: Layers its push named (0 with podman, which names none).
      type: int
    layers_mounted:
      description: Layers mounted from another repository.
      type: int
    layers_existing:
      description: Layers the registry had already.
      type: int
    summary:
      description: Its summary line (empty when it failed).
      type: str
"""
