"""The pps_image role: archive or URL in, image reference out, idempotent."""

from __future__ import annotations

import functools
import hashlib
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from ansible_cli import ansible_env, run_playbook
from test_pps_image import archive

PLAYBOOK = "playbooks/pps_image.yml"


def registry_facts(rig, repo):
    return {"host": rig["RIG_REGISTRY"], "username": rig["RIG_REGISTRY_USER"],
            "password": rig["RIG_REGISTRY_PASSWORD"], "ca_path": rig["RIG_REGISTRY_CA"], "repositories": {"pps": repo}}


def test_role_pushes_and_publishes_the_reference_once(rig, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = f"datarobot/role-{uuid.uuid4().hex[:6]}"
    extra = {"mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.1",
             "_mlops": {"registry": registry_facts(rig, repo)}}
    first = run_playbook(PLAYBOOK, extra_vars=extra)
    assert first.returncode == 0, first.failure()
    published = first.task("Publish the image reference for the chart's imageBuilder.ppsImage")["ansible_facts"]
    assert published["__pps_image_published"]["pps_image"] == f"{rig['RIG_REGISTRY']}/{repo}:9.2.1"
    assert published["__pps_image_published"]["pps_image_digest"].startswith("sha256:")
    again = run_playbook(PLAYBOOK, extra_vars=extra)
    assert again.returncode == 0 and again.changed == 0
    assert rig["RIG_REGISTRY_PASSWORD"] not in first.stdout + again.stdout


def test_background_push_is_collected_later_when_home_is_not_the_account_home(rig, tmp_path):
    """Containers (AWX execution environments) often run with a HOME that is not the account's home directory: the
    push started in the background and collected by a later play (as site.yml does) is found where it wrote its
    result (its job directory), and no Ansible async status is written anywhere."""
    facts = archive(tmp_path, compress=True)
    repo = f"datarobot/bg-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "home"
    home.mkdir()
    extra = {"mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.1",
             "_mlops": {"registry": registry_facts(rig, repo)}}
    run = run_playbook("tests/integration/playbooks/pps_image_background.yml", extra_vars=extra,
                       env=ansible_env(HOME=str(home)))
    assert run.returncode == 0, run.failure() + run.stderr[-2000:]
    assert not (home / ".ansible_async").exists(), "an Ansible async job ran"
    assert run.task("Push the PPS image")["started"] is True
    assert run.task("Wait for the PPS push, a progress line every few seconds")["changed"] is True
    published = run.task("Publish the image reference for the chart's imageBuilder.ppsImage")["ansible_facts"]
    assert published["__pps_image_published"]["pps_image"] == f"{rig['RIG_REGISTRY']}/{repo}:9.2.1"


def test_role_downloads_with_a_checksum_first(rig, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    facts = archive(served, "pps-9.3.0.tar.gz", compress=True)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pps-9.3.0.tar.gz"
        checksum = "sha256:" + hashlib.sha256(facts.path.read_bytes()).hexdigest()
        repo = f"datarobot/dl-{uuid.uuid4().hex[:6]}"
        extra = {"mlops_pps_image_url": url, "mlops_pps_image_checksum": checksum, "mlops_pps_image_version": "9.3.0",
                 "mlops_pps_image_download_dir": str(tmp_path / "downloads"),
                 "_mlops": {"registry": registry_facts(rig, repo)}}
        run = run_playbook(PLAYBOOK, extra_vars=extra)
        assert run.returncode == 0, run.failure()
        assert (tmp_path / "downloads" / "pps-9.3.0.tar.gz").exists()
        # The registry has the tag now, so only a forced run downloads (and checks) again.
        wrong = run_playbook(PLAYBOOK, extra_vars={**extra, "mlops_pps_image_checksum": "sha256:" + "0" * 64,
                                                   "mlops_pps_image_download_dir": str(tmp_path / "other"),
                                                   "mlops_pps_image_force": True})
        assert wrong.returncode != 0 and "checksum" in wrong.failure().lower()
    finally:
        server.shutdown()


def test_role_refuses_latest_and_missing_inputs(rig, tmp_path):
    facts = archive(tmp_path)
    latest = run_playbook(PLAYBOOK, extra_vars={"mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "latest",
                                                "_mlops": {"registry": registry_facts(rig, "datarobot/x")}})
    assert "Refusing tag 'latest'" in latest.failure()
    missing = run_playbook(PLAYBOOK, extra_vars={"mlops_pps_image_archive": "", "mlops_pps_image_version": "1.0",
                                                 "_mlops": {"registry": registry_facts(rig, "datarobot/x")}})
    assert "pps_image needs mlops_pps_image_archive" in missing.failure()


def test_role_failures_name_the_variables_to_set(rig, tmp_path):
    """The module says `insecure: true` (its option); the role says the variable the user sets."""
    facts = archive(tmp_path)
    plain_http = {"host": rig["RIG_INSECURE_REGISTRY"], "repositories": {"pps": f"datarobot/http-{uuid.uuid4().hex[:6]}"}}
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.1",
                                             "_mlops": {"registry": plain_http}})
    assert run.returncode != 0
    # The module's own words (the push runs in the foreground by default)
    assert "set insecure: true" in run.task("Push the PPS image")["msg"]
    message = run.failure()
    assert "it answers in plain HTTP" in message and "set mlops_registry_insecure: true" in message, message
    assert "set insecure: true" not in message
