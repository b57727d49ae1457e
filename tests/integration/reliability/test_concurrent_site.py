"""Two site.yml runs at once against the same cluster and namespace, with different agent values.

The promise: no corruption. Each run either completes or fails with the clear "another operation is in progress"
message; the release ends deployed with one run's values entirely (never a mix, never pending), and a rerun
converges to changed=0.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading

from ansible_cli import run_playbook
from test_site import cleanup, demo_archives, fresh_namespace  # noqa: F401 pylint: disable=unused-import


def helm_json(*args: str):
    proc = subprocess.run([os.environ["HELM"], *args, "-o", "json"], capture_output=True, text=True, check=True,
                          timeout=60)
    return json.loads(proc.stdout)


def test_two_site_runs_at_once(rig, demo_archives, ledger):  # noqa: F811 (demo_archives: the imported fixture)
    namespace = fresh_namespace("concurrent")
    base = {"mlops_namespace": namespace}
    try:
        first = run_playbook("site.yml", extra_vars=base)
        assert first.returncode == 0, first.failure()
        values = {name: {**base, "mlops_management_agent_extra_values": {"managementAgent": {"replicas": replicas}}}
                  for name, replicas in (("two", 2), ("three", 3))}
        runs = {}

        def run(name):
            runs[name] = run_playbook("site.yml", extra_vars=values[name])

        threads = [threading.Thread(target=run, args=(name,)) for name in values]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=900)
        outcomes = {name: (result.returncode, result.failure()) for name, result in runs.items()}
        failures = [message for code, message in outcomes.values() if code]
        clear = all("another operation is in progress" in message.lower() for message in failures)
        status = helm_json("status", "bosun", "-n", namespace)
        deployed = helm_json("get", "values", "bosun", "-n", namespace)
        replicas = deployed.get("managementAgent", {}).get("replicas")
        live = json.loads(subprocess.run(
            [os.environ["KUBECTL"], "-n", namespace, "get", "deployments", "-l",
             "app.kubernetes.io/component=management-agent", "-o", "json"],
            capture_output=True, text=True, check=True, timeout=60).stdout)["items"]
        consistent = [item["spec"]["replicas"] for item in live] == [replicas]
        pending = [entry for entry in helm_json("history", "bosun", "-n", namespace)
                   if entry["status"].startswith("pending")]
        rerun = run_playbook("site.yml", extra_vars=values["two" if replicas == 2 else "three"])
        held = (len(failures) < 2 and clear and status["info"]["status"] == "deployed" and replicas in (2, 3)
                and consistent and not pending and rerun.returncode == 0 and rerun.changed == 0)
        ledger.record("fault", "two site.yml runs at once on one namespace", held,
                      detail=f"outcomes {outcomes}; deployed replicas {replicas}; "
                      f"live {[item['spec']['replicas'] for item in live]}; pending {len(pending)}; "
                      f"rerun changed {rerun.changed}")
        assert len(failures) < 2 and clear, outcomes
        assert status["info"]["status"] == "deployed" and replicas in (2, 3) and consistent, (status, deployed, live)
        assert not pending, pending
        assert rerun.returncode == 0 and rerun.changed == 0, rerun.failure()
    finally:
        cleanup(namespace)
