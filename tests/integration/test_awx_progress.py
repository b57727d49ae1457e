"""The PPS push's progress as AWX shows it: the pps_image job template run the way AWX's task system runs a job
(ansible-runner over a private data directory, tests/awx_job.py), a ~300 MB archive pushed through a slow loopback
link. AWX's job output is the runner's job events: the progress lines must be `verbose` events with rising
percentages, all of them before the push task's end, and no event or other artifact may hold the registry password.
"""

from __future__ import annotations

import base64
import os
import sys
import uuid
from pathlib import Path

from ansible_cli import REPO
from awx_job import (Injected, credential_types, execution_environment, inject, run_job, secrets_in,
                     template_extra_vars)
from progress_fixtures import (  # noqa: F401 pylint: disable=unused-import
    MB, PROGRESS, SUMMARY, large_archive, rising, slow_link)

PLAYBOOK = "playbooks/pps_image.yml"


def test_awx_job_output_shows_rising_progress_before_the_push_ends(rig, new_namespace, large_archive,  # noqa: F811
                                                                   slow_link, tmp_path, ledger):  # noqa: F811
    job_dir, prefix = tmp_path / "private", f"awx-progress-{uuid.uuid4().hex[:6]}/"
    types, injected = credential_types(), Injected()
    # The AWX registry credential names the rig's TLS registry with its login; this cluster's inventory names the slow
    # registry (no login), so the credential's password is in the job's files but must show up in no artifact.
    inject(types["DataRobot MLOps container registry"], {"host": rig["RIG_REGISTRY"],
           "username": rig["RIG_REGISTRY_USER"], "password": rig["RIG_REGISTRY_PASSWORD"]}, job_dir, injected)
    inject(types["DataRobot MLOps kubeconfig"], {"kubeconfig": Path(rig["KUBECONFIG"]).read_text()},
           job_dir, injected)
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "mlops_namespace": new_namespace("t-awx-progress"), "mlops_registry_host": f"127.0.0.1:{slow_link.port}",
            "mlops_registry_insecure": True, "mlops_registry_path_prefix": prefix}
    answers = {"mlops_pps_image_version": "9.2.0", "mlops_survey_pps_image_archive": str(large_archive)}
    extravars = dict(template_extra_vars(PLAYBOOK, answers), mlops_pps_image_poll=2)
    job = run_job(job_dir, REPO, PLAYBOOK, inventory={"clusters": {"hosts": {"cluster-1": host}}}, extravars=extravars,
                  injected=injected, base_env=execution_environment(dict(os.environ)))
    assert job.status == "successful", job.process.stdout[-6000:] + job.process.stderr[-2000:]

    image = f"127.0.0.1:{slow_link.port}/{prefix}datarobot/datarobot-portable-prediction-api:9.2.0"
    events = job.events()
    end = push_end(events)
    assert SUMMARY.match(events[end]["event_data"]["res"]["summary"])["image"] == image
    progress = [(index, match) for index, event in enumerate(events) if event["event"] == "verbose"
                for line in event.get("stdout", "").splitlines() if (match := PROGRESS.match(line.strip()))]
    percents = [int(match["percent"]) for _index, match in progress]
    assert len(rising(percents)) >= 3, f"progress in verbose events: {percents}\n{job.process.stdout[-3000:]}"
    assert percents == sorted(percents), percents
    assert all(index < end for index, _match in progress), "a progress line came after the push's end"
    assert {match["image"] for _index, match in progress} == {image}
    assert slow_link.faults.body_bytes.get("PATCH", 0) > 250 * MB  # the bytes did go through the slow link

    user, password = rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]
    canaries = {"registry credential password": password,
                "registry credential login (base64)": base64.b64encode(f"{user}:{password}".encode()).decode()}
    hits = secrets_in(job.artifacts, canaries)
    ledger.record("secret", "AWX job (ansible-runner) artifacts of a PPS push with progress: registry password",
                  held=not hits, detail=", ".join(hits), count=len(hits))
    assert hits == []


def push_end(events: list[dict]) -> int:
    """The index of the push task's end: the runner_on_ok event whose result says the image was pushed."""
    ends = [index for index, event in enumerate(events) if event["event"] == "runner_on_ok"
            and SUMMARY.match(str(event["event_data"].get("res", {}).get("summary", "")))]
    assert ends, "no runner_on_ok event holds the push's summary"
    return ends[0]


def test_push_end_is_the_first_ok_event_with_a_summary():
    summary = "r:1/a:9.2.0: pushed, 300.0 MB archive, 300.0 MB sent in 25.1s (12.0 MB/s)"
    events = [{"event": "verbose", "stdout": summary}, {"event": "runner_on_ok", "event_data": {"res": {}}},
              {"event": "runner_on_ok", "event_data": {"res": {"summary": summary}}},
              {"event": "runner_on_ok", "event_data": {"res": {"summary": summary}}}]
    assert push_end(events) == 2
