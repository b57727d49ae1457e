"""The registry role's gcloud (vendor gar, mlops_registry_gcp_manage_iam) runs with a clean environment.

There is no gcloud here: a fake one on PATH records its arguments and environment (into $CLOUDSDK_CONFIG, which
also proves CLOUDSDK_* reaches it) and answers get-iam-policy with an empty policy. The role's task file runs for
real through ansible-playbook (include_role tasks_from), no cluster needed.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from ansible_cli import BIN, REPO, PlaybookRun, ansible_env

FAKE_GCLOUD = """#!/bin/sh
n=$(ls "$CLOUDSDK_CONFIG" | wc -l)
env > "$CLOUDSDK_CONFIG/env-$n"
printf '%s\\n' "$@" > "$CLOUDSDK_CONFIG/argv-$n"
case "$*" in *get-iam-policy*) echo '{"bindings": []}' ;; esac
"""

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: datarobot_mlops.management_agent.registry
        tasks_from: gar_iam_bindings
"""


def with_fake_gcloud(tmp_path: Path, script: str) -> tuple[Path, Path]:
    """`script` as gcloud in a directory of its own (put it first on PATH), an empty CLOUDSDK_CONFIG directory for
    its records, and PLAY beside them: (that bin directory, the config directory)."""
    fake_bin, config = tmp_path / "bin", tmp_path / "gcloud-config"
    fake_bin.mkdir()
    config.mkdir()
    (fake_bin / "gcloud").write_text(script)
    (fake_bin / "gcloud").chmod(0o755)
    (tmp_path / "play.yml").write_text(PLAY)
    return fake_bin, config


def test_gcloud_gets_its_own_variables_and_no_secret_of_the_run(tmp_path):
    fake_bin, config = with_fake_gcloud(tmp_path, FAKE_GCLOUD)
    canary = f"canary{uuid.uuid4().hex}"
    env = ansible_env(DATAROBOT_API_TOKEN=canary, REGISTRY_PASSWORD=canary, SITE_NOTE=canary,
                      CLOUDSDK_CONFIG=str(config), CLOUDSDK_CORE_PROJECT="p1", GOOGLE_APPLICATION_CREDENTIALS="/k.json",
                      HTTPS_PROXY="http://proxy.invalid:3128", NOTE_WITH_SPACES="a b 'c'")
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    extra = {"mlops_registry_gcp_project": "p1", "mlops_registry_gcp_service_account": "builder",
             "mlops_namespace": "ns", "ansible_python_interpreter": str(BIN / "python")}
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                          "-e", json.dumps(extra)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    envs = sorted(config.glob("env-*"))
    assert len(envs) == 4  # two policies read, two bindings added (the empty policies hold neither)
    argvs = [Path(str(path).replace("env-", "argv-")).read_text().split("\n") for path in envs]
    assert argvs[0][:3] == ["projects", "get-iam-policy", "p1"]
    assert any(arg.startswith("--member=serviceAccount:p1.svc.id.goog[ns/") for argv in argvs for arg in argv)
    for path in envs:
        text = path.read_text()
        child = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert canary not in text, f"{path.name}: a secret of the run reached gcloud"
        assert not {"DATAROBOT_API_TOKEN", "REGISTRY_PASSWORD", "SITE_NOTE", "NOTE_WITH_SPACES",
                    "ANSIBLE_CONFIG"} & set(child), sorted(child)
        assert child["CLOUDSDK_CONFIG"] == str(config) and child["CLOUDSDK_CORE_PROJECT"] == "p1"
        assert child["GOOGLE_APPLICATION_CREDENTIALS"] == "/k.json"
        assert child["HTTPS_PROXY"] == "http://proxy.invalid:3128"
        assert child["PATH"].startswith(str(fake_bin)) and child["HOME"]


# A project whose policy holds the push role already; a Google service account that does not exist yet (a check run
# before the one that creates it).
FAKE_GCLOUD_NEW_ACCOUNT = """#!/bin/sh
n=$(ls "$CLOUDSDK_CONFIG" | wc -l)
printf '%s\\n' "$@" > "$CLOUDSDK_CONFIG/argv-$n"
case "$*" in
  *"service-accounts get-iam-policy"*) echo "ERROR: (gcloud.iam.service-accounts.get-iam-policy) NOT_FOUND" >&2
                                      exit 1 ;;
  *"projects get-iam-policy"*) echo '{"bindings": [{"role": "roles/artifactregistry.writer",
                                 "members": ["serviceAccount:builder@p1.iam.gserviceaccount.com"]}]}' ;;
esac
"""


def test_a_check_run_reports_the_bindings_of_a_service_account_not_made_yet(tmp_path):
    fake_bin, config = with_fake_gcloud(tmp_path, FAKE_GCLOUD_NEW_ACCOUNT)
    env = ansible_env(CLOUDSDK_CONFIG=str(config))
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    extra = {"mlops_registry_gcp_project": "p1", "mlops_registry_gcp_service_account": "builder",
             "mlops_registry_gcp_push_role": "roles/artifactregistry.writer", "mlops_namespace": "ns",
             "ansible_python_interpreter": str(BIN / "python")}
    run = PlaybookRun.of(subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"), "--check",
         "-e", json.dumps(extra)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    reported = run.task("The bindings a real run would add")
    added = [item["msg"] for item in reported["results"] if item.get("changed")]
    assert added == ["Would add roles/iam.workloadIdentityUser for serviceAccount:p1.svc.id.goog[ns/"
                     "datarobot-management-agent-image-builder]."], reported
    calls = [path.read_text().split("\n") for path in sorted(config.glob("argv-*"))]
    assert [argv[:3] for argv in calls] == [["projects", "get-iam-policy", "p1"],
                                            ["iam", "service-accounts", "get-iam-policy"]]  # read only
