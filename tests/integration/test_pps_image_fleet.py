"""A fleet: one registry per cluster, pushed by playbooks/pps_image.yml in parallel forks on one controller.

Each cluster is a localhost alias with its own docker-registry process (the rig's binary, plain HTTP, `insecure`).
The forks push the same archive; the spool (pps_image `spool`) lets one fork compress each layer and the others
upload what it compressed, each to its own registry. The first fork also spools the archive's index; the others
read no byte of the archive (`archive_bytes_read` 0). The promises: the same digests in every registry, a second
run changes nothing, and no spool is left behind. While the test itself holds the archive's spool open (as a slow
fork would), every layer is compressed exactly once across the fleet and the archive read once, whatever order
the forks start in.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest
import requests

from ansible_cli import REPO, ansible_env, run_playbook
from fault_proxy import FaultProxy
from fixtures.image_archives import write_docker_archive
from progress_fixtures import MB, PROGRESS, SUMMARY, rising

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (
    BlobStream,
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import USERS, BlobSpool
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import Archive
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import human_bytes
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._spool_index import SpoolIndex

sys.path.insert(0, str(REPO / "tests" / "rig"))
from processes import free_port  # noqa: E402  the rig's helpers
from registry import RegistryProcess  # noqa: E402

PLAYBOOK = "playbooks/pps_image.yml"
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
BIG_LAYERS = 3  # each several MiB, and one small layer besides: every layer goes through the spool
LAYERS = BIG_LAYERS + 1


class Fleet:
    """N empty registries on loopback, and an inventory of N clusters, each pushing to its own."""

    def __init__(self, root: Path, size: int) -> None:
        self.root, self.size = root, size
        ports: list[int] = []
        for _index in range(size):
            ports.append(free_port(taken=ports))
        self.addresses = [f"127.0.0.1:{port}" for port in ports]
        self.processes: list[RegistryProcess] = []
        self.repo = f"datarobot/fleet-{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> "Fleet":
        for index, address in enumerate(self.addresses):
            data = self.root / f"registry-{index}"
            data.mkdir(parents=True)
            config = data / "config.json"
            config.write_text(json.dumps({
                "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": str(data / "storage")}}, "http": {"addr": address}}))
            self.processes.append(RegistryProcess(config, address, ready_status=200).__enter__())
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.__exit__()

    def inventory(self, addresses: list[str] | None = None) -> str:
        """Each cluster pushing to its registry (or to the address given in its place: a proxy in front of it)."""
        hosts = {f"cluster-{index}": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "_mlops": {"registry": {"host": address, "insecure": True, "repositories": {"pps": self.repo}}}}
            for index, address in enumerate(addresses or self.addresses)}
        path = self.root / "fleet.yml"
        path.write_text(json.dumps({"clusters": {"hosts": hosts}}))
        return str(path)

    def manifests(self, tag: str) -> list[tuple[str, list[str]]]:
        """(manifest digest, layer digests) as each registry serves the tag."""
        found = []
        for address in self.addresses:
            answer = requests.get(f"http://{address}/v2/{self.repo}/manifests/{tag}",
                                  headers={"Accept": MANIFEST_TYPES}, timeout=10)
            assert answer.status_code == 200, f"{address}: {answer.status_code}"
            found.append((answer.headers["Docker-Content-Digest"],
                          [layer["digest"] for layer in answer.json()["layers"]]))
        return found


def fleet_archive(tmp_path: Path) -> Path:
    layers = [{f"opt/pps/part{index}.bin": bytes(range(256)) * 4096 * (index + 2) + uuid.uuid4().bytes}
              for index in range(BIG_LAYERS)] + [{"etc/pps.conf": b"threads=4\n"}]
    return write_docker_archive(tmp_path / "pps.tar.gz", ["datarobot/datarobot-portable-prediction-api:fleet"],
                                layers, compress=True).path


def push(fleet: Fleet, archive: Path, cache: Path, tag: str = "9.2.0", one_run: bool = False, diff: bool = False):
    """The stage, each cluster's push in a fork of its own (sharing the spool), or `one_run`: the first cluster's
    module run pushing for all (mlops_pps_image_fleet)."""
    env = ansible_env(ANSIBLE_FORKS=str(fleet.size), XDG_CACHE_HOME=str(cache))
    return run_playbook(PLAYBOOK, inventory=fleet.inventory(), env=env, diff=diff,
                        extra_vars={"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": tag,
                                    "mlops_pps_image_fleet": one_run})


def spools(root: Path) -> list[Path]:
    """The archives' spools under the spool root (which keeps only its lock file between runs)."""
    return [path for path in root.iterdir() if path.name != ".lock"]


def pushed(run, fleet: Fleet) -> list[dict]:
    """Each cluster's pps_image result: collected by the wait task when the push ran in the background (the default),
    or, for a fleet's other clusters, its entry in the first cluster's result."""
    results = []
    for index in range(fleet.size):
        host = f"cluster-{index}"
        started = run.task("Push the PPS image", host)
        if started.get("skipped"):
            results.append(run.task("The push's result",
                                    host)["ansible_facts"]["__pps_image_push"])
        else:
            results.append(run.task("Wait for the PPS push, a progress line every few seconds", host)
                           if started.get("started") else started)
    return results


@pytest.mark.parametrize("one_run", [True, False], ids=["one run", "forks"])
@pytest.mark.parametrize("size", [2, 4])
def test_a_fleet_compresses_each_layer_once_and_gets_the_same_digests(rig, tmp_path, size, one_run, ledger):
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    spool_root = cache / "datarobot_mlops" / "spool"
    with Fleet(tmp_path / "fleet", size) as fleet:
        holder = BlobSpool(str(spool_root), 1 << 30).join(str(archive), Compression())  # a fork still running
        first = push(fleet, archive, cache, one_run=one_run, diff=True)
        assert first.returncode == 0, first.failure() + first.stderr[-2000:]
        results = pushed(first, fleet)
        assert all(result["changed"] for result in results)
        # One fork compressed each layer; every other fork uploaded that fork's blob.
        assert sum(result["blobs_from_spool"] for result in results) == LAYERS * (size - 1)
        # One fork read the archive; the others followed its spooled index and blobs, reading none of it.
        reads = sorted(result["archive_bytes_read"] for result in results)
        assert reads[0] == 0 and reads[-1] >= archive.stat().st_size, reads
        assert reads.count(0) == size - 1, reads
        assert sum(result["bytes_compressed"] for result in results) == sum(
            layer.member.size for layer in Archive.scan(str(archive)).select(None).layers), results
        served = fleet.manifests("9.2.0")
        # One manifest digest everywhere: it covers every layer's digest.
        assert len({manifest for manifest, _layers in served}) == 1, served
        assert {result["digest"] for result in results} == {served[0][0]}
        # --diff shows every registry: in one run, the first cluster's diff has one per registry, headed by its image
        images = [f"{address}/{fleet.repo}:9.2.0" for address in fleet.addresses]
        diffs = results[0]["diff"] if one_run else [result["diff"] for result in results]
        assert isinstance(diffs, list), diffs
        assert [diff.get("before_header", diff["after"]["image"]) for diff in diffs] == images, diffs
        assert [(diff["before"]["digest"], diff["after"]["digest"]) for diff in diffs] == \
            [("", served[0][0])] * size, diffs
        holder.leave()
        assert spools(spool_root) == [], "the last push out leaves no spool"

        # one module run pushed for all, or one for each; each cluster reports its own change
        assert [bool(first.task("Push the PPS image", f"cluster-{index}").get("skipped"))
                for index in range(size)] == [False] + [one_run] * (size - 1)
        assert all(first.document["stats"][f"cluster-{index}"]["changed"] >= 1 for index in range(size)), \
            first.document["stats"]

        again = push(fleet, archive, cache, one_run=one_run)
        ledger.record("idempotence", f"fleet push to {size} registries{' in one run' if one_run else ''}, second run", again.returncode == 0 and
                      again.changed == 0, again.failure(), count=again.changed)
        assert again.returncode == 0 and again.changed == 0, again.failure()
        assert spools(spool_root) == []


def test_in_one_run_each_cluster_reports_its_own_registrys_change(rig, tmp_path):
    """The first cluster's module run pushes for the fleet, and its result's changed is the fleet's: where only the
    other cluster's registry lacked the image, the first cluster still reports no change of its own (own_changed),
    and the other cluster reports its own."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    with Fleet(tmp_path / "fleet", 2) as fleet:
        env = ansible_env(ANSIBLE_FORKS="2", XDG_CACHE_HOME=str(cache))
        alone = run_playbook(PLAYBOOK, inventory=fleet.inventory(), env=env,
                             extra_vars={"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "9.2.0",
                                         "mlops_hosts": "cluster-0"})
        assert alone.returncode == 0 and alone.changed >= 1, alone.failure()
        both = push(fleet, archive, cache, one_run=True)
        assert both.returncode == 0, both.failure()
        waited = both.task("Wait for the PPS push, a progress line every few seconds", "cluster-0")
        assert waited["own_changed"] is False and waited["fleet"]["cluster-1"]["changed"] is True, waited
        assert waited["changed"] is False, "the first cluster reported the other cluster's change as its own"
        stats = both.document["stats"]
        assert stats["cluster-0"]["changed"] == 0 and stats["cluster-1"]["changed"] >= 1, stats


def test_a_fleet_without_a_spool_still_gets_the_same_digests(rig, tmp_path):
    """Forks that start apart (the spool already gone) compress on their own: deterministic gzip, same digests."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    with Fleet(tmp_path / "fleet", 2) as fleet:
        env = ansible_env(ANSIBLE_FORKS="2", XDG_CACHE_HOME=str(cache))
        run = run_playbook(PLAYBOOK, inventory=fleet.inventory(), env=env,
                           extra_vars={"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "9.2.0",
                                       "mlops_pps_image_spool": False})
        assert run.returncode == 0, run.failure()
        assert all(result["blobs_from_spool"] == 0 for result in pushed(run, fleet))
        assert all(result["archive_bytes_read"] >= archive.stat().st_size for result in pushed(run, fleet))
        assert len({manifest for manifest, _layers in fleet.manifests("9.2.0")}) == 1
        assert not (cache / "datarobot_mlops" / "spool").exists()


def test_a_single_cluster_writes_no_spool(rig, tmp_path):
    """One host in the batch: no other fork can follow it, so the role turns the spool off and nothing of the
    compressed image is written to disk, even while another push of the archive holds its spool open."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    spool_root = cache / "datarobot_mlops" / "spool"
    holder = BlobSpool(str(spool_root), 1 << 30).join(str(archive), Compression())
    with Fleet(tmp_path / "fleet", 1) as fleet:
        run = push(fleet, archive, cache)
        assert run.returncode == 0, run.failure()
        assert run.task("Push the PPS image", "cluster-0")["invocation"]["module_args"]["spool"] is False
        result = pushed(run, fleet)[0]
        assert result["changed"] and result["blobs_from_spool"] == 0
        assert result["archive_bytes_read"] >= archive.stat().st_size
        written = [path.name for path in Path(holder.directory).iterdir() if path.name != USERS]
        assert written == [], written
    holder.leave()
    assert spools(spool_root) == []


def test_what_a_broken_fork_left_in_the_spool_is_never_uploaded(rig, tmp_path, ledger):
    """Three layers, three leftovers: a spooled blob with other bytes under the right facts, a half-written `.part`
    of a writer that died (no facts), a blob cut short under facts that claim it whole. The forks must upload the
    right blob everywhere: the damaged one is refused by its digest (each fork compresses that layer itself), the
    other two (and the small layer) are written afresh by one fork and uploaded by the other."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    holder = BlobSpool(str(cache / "datarobot_mlops" / "spool"), 1 << 30).join(str(archive), Compression())
    image = Archive.scan(str(archive)).select(None)
    big = image.layers[:BIG_LAYERS]
    right = {}
    for layer in big:
        stream = BlobStream(layer, Compression())
        body = b"".join(stream.pieces(Archive.scan(str(archive)).read_again(layer.member)))
        right[layer.member.name] = (body, stream.blob_digest(), stream.source_digest())
    damaged, dead_writer, cut = (holder.entry(layer.member.name) for layer in big)
    body, blob_digest, source_digest = right[big[0].member.name]
    plant(damaged, body[:-1] + bytes([body[-1] ^ 0xFF]), blob_digest, source_digest)
    Path(dead_writer.base + ".999999.dead.part").write_bytes(right[big[1].member.name][0][:4096])
    body, blob_digest, source_digest = right[big[2].member.name]
    plant(cut, body[:len(body) // 2], blob_digest, source_digest, claimed_size=len(body))
    with Fleet(tmp_path / "fleet", 2) as fleet:
        run = push(fleet, archive, cache)
        served = fleet.manifests("9.2.0") if run.returncode == 0 else []
        expected = {facts[1] for facts in right.values()}
        held = run.returncode == 0 and all(expected <= set(layers) for _manifest, layers in served) and \
            sum(result["blobs_from_spool"] for result in pushed(run, fleet)) == 3
        ledger.record("fault", "fleet push: damaged, half-written and cut blobs left in the spool", held,
                      run.failure())
        assert run.returncode == 0, run.failure()
        assert len({manifest for manifest, _layers in served}) == 1
        assert all(expected <= set(layers) for _manifest, layers in served), (expected, served)
        # the two rewritten layers and the small one
        assert sum(result["blobs_from_spool"] for result in pushed(run, fleet)) == 3
    holder.leave()
    assert spools(cache / "datarobot_mlops" / "spool") == []


def plant(entry, body: bytes, blob_digest: str, source_digest: str, claimed_size: int | None = None) -> None:
    """A spooled blob as a push would have published it, but with `body` in place of the right bytes."""
    Path(entry.blob_path).write_bytes(body)
    Path(entry.facts_path).write_text(json.dumps({"source_digest": source_digest, "blob_digest": blob_digest,
                                                  "size": len(body) if claimed_size is None else claimed_size}))


def test_a_damaged_spooled_index_sends_every_fork_back_to_the_archive(rig, tmp_path, ledger):
    """An index a broken fork left (published, but cut short): no fork trusts it; each reads the archive itself and
    every registry still gets the same image."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    holder = BlobSpool(str(cache / "datarobot_mlops" / "spool"), 1 << 30).join(str(archive), Compression())
    index = SpoolIndex(holder)
    Path(index.index_path).write_text('{"format": 1, "gzipped": true, "members": {"abc/layer.tar": [')
    with Fleet(tmp_path / "fleet", 2) as fleet:
        run = push(fleet, archive, cache)
        results = pushed(run, fleet) if run.returncode == 0 else []
        served = fleet.manifests("9.2.0") if run.returncode == 0 else []
        held = run.returncode == 0 and len({manifest for manifest, _layers in served}) == 1 and \
            all(result["archive_bytes_read"] >= archive.stat().st_size for result in results)
        ledger.record("fault", "fleet push: a damaged index left in the spool", held, run.failure())
        assert run.returncode == 0, run.failure()
        assert len({manifest for manifest, _layers in served}) == 1, served
        assert all(result["archive_bytes_read"] >= archive.stat().st_size for result in results), results
    holder.leave()
    assert spools(cache / "datarobot_mlops" / "spool") == []


FOLLOW_RATE = 8 * MB  # bytes per second to each registry: the fleet's push of ~80 MB takes ~10 s


@pytest.mark.parametrize("one_run", [False, True], ids=["forks", "one run"])
def test_every_push_of_a_fleet_shows_its_progress_rising(rig, tmp_path, one_run):
    """Each registry behind a slow loopback link, progress lines every second. In forks, the fork that reads the
    archive and the one that follows it (it reads none of it, and said 0% until its end before) both show rising
    percentages. In one run, its one line sums both pushes' bytes, and rises."""
    # Two large layers sent side by side, each in several chunks (a chunk sent is what moves the progress)
    layers = [{f"opt/pps/part{index}.bin": os.urandom(40 * MB)} for index in range(2)] + \
        [{"etc/pps.conf": uuid.uuid4().hex.encode()}]
    archive = write_docker_archive(tmp_path / "pps.tar.gz", ["datarobot/datarobot-portable-prediction-api:fleet"],
                                   layers, compress=True).path
    cache = tmp_path / "cache"
    holder = BlobSpool(str(cache / "datarobot_mlops" / "spool"), 1 << 30).join(str(archive), Compression())
    with Fleet(tmp_path / "fleet", 2) as fleet, \
            FaultProxy(int(fleet.addresses[0].rsplit(":", 1)[1])) as first, \
            FaultProxy(int(fleet.addresses[1].rsplit(":", 1)[1])) as second:
        # in one run, the first registry's link is faster: its push ends well before the other's
        first.faults.rate, second.faults.rate = (4 if one_run else 1) * FOLLOW_RATE, FOLLOW_RATE
        proxies = [f"127.0.0.1:{proxy.port}" for proxy in (first, second)]
        env = ansible_env(ANSIBLE_FORKS="2", XDG_CACHE_HOME=str(cache), ANSIBLE_STDOUT_CALLBACK="default")
        run = run_playbook(PLAYBOOK, inventory=fleet.inventory(proxies), env=env,
                           extra_vars={"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "9.2.0",
                                       "mlops_pps_image_poll": 1, "mlops_pps_image_fleet": one_run})
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        assert len({manifest for manifest, _layers in fleet.manifests("9.2.0")}) == 1
    holder.leave()
    lines = [line.strip() for line in run.stdout.splitlines()]
    shown = [(f"{proxies[0]}/{fleet.repo}:9.2.0 and 1 more registry", f"{proxies[0]}/{fleet.repo}:9.2.0")] \
        if one_run else [(f"{proxy}/{fleet.repo}:9.2.0",) * 2 for proxy in proxies]
    for image, summary in shown:
        end = next((index for index, line in enumerate(lines)
                    if (match := SUMMARY.match(line)) and match["image"] == summary), None)
        assert end is not None, f"no summary line for {summary} in:\n{run.stdout[-3000:]}"
        percents = [int(match["percent"]) for line in lines[:end]
                    if (match := PROGRESS.match(line)) and match["image"] == image]
        assert len([percent for percent in rising(percents) if percent > 0]) >= 2, \
            f"{image}: progress lines before the end: {percents}\n{run.stdout[-3000:]}"
        assert percents == sorted(percents), (image, percents)
        if one_run:  # one line for both pushes: of both pushes' bytes; at the end, each registry's summary
            both = f" of {human_bytes(2 * archive.stat().st_size)}, "
            assert all(both in line for line in lines[:end] if line.startswith(f"{image}: ")), run.stdout[-3000:]
            other = f"{proxies[1]}/{fleet.repo}:9.2.0"
            assert any((match := SUMMARY.match(line)) and match["image"] == other for line in lines[end:]), \
                run.stdout[-3000:]


def test_in_one_run_each_cluster_fails_alone_and_no_secret_is_shown(rig, tmp_path, ledger):
    """One module run pushes for three clusters: the first's registry cannot be reached (the run's own), the second's
    refuses every upload, the third's works and takes a login. Each of the first two fails with its own registry's
    message; the third gets the image; the login's password is never printed."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    password = f"fleet-secret-{uuid.uuid4().hex}"
    with Fleet(tmp_path / "fleet", 3) as fleet, FaultProxy(int(fleet.addresses[1].rsplit(":", 1)[1])) as refusing:
        refusing.faults.fail(1000, 403, lambda method, path: method == "POST" and "/blobs/uploads/" in path)
        unreachable = f"127.0.0.1:{free_port(taken=[int(a.rsplit(':', 1)[1]) for a in fleet.addresses])}"
        inventory = json.loads(Path(fleet.inventory([unreachable, f"127.0.0.1:{refusing.port}",
                                                     fleet.addresses[2]])).read_text())
        inventory["clusters"]["hosts"]["cluster-2"]["_mlops"]["registry"].update(username="pusher", password=password)
        (tmp_path / "fleet.json").write_text(json.dumps(inventory))
        env = ansible_env(ANSIBLE_FORKS="3", XDG_CACHE_HOME=str(cache))
        run = run_playbook(PLAYBOOK, inventory=str(tmp_path / "fleet.json"), env=env,
                           extra_vars={"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "9.2.0"})
        failures = {host: result.get("msg", "") for task in run.document["plays"][0]["tasks"]
                    for host, result in task["hosts"].items() if result.get("failed")}
        third = pushed_by_first(run, "cluster-2")
        served = requests.get(f"http://{fleet.addresses[2]}/v2/{fleet.repo}/manifests/9.2.0",
                              headers={"Accept": MANIFEST_TYPES}, timeout=10)
        held = sorted(failures) == ["cluster-0", "cluster-1"] and unreachable in failures["cluster-0"] and \
            "refuses pushes" in failures["cluster-1"] and served.status_code == 200 and password not in run.stdout
        ledger.record("fault", "fleet push in one run: its own registry unreachable, another refusing uploads",
                      held, str(failures))
        assert run.returncode != 0
        assert sorted(failures) == ["cluster-0", "cluster-1"], failures
        assert unreachable in failures["cluster-0"], failures
        assert "refuses pushes" in failures["cluster-1"] and f"127.0.0.1:{refusing.port}" in failures["cluster-1"], failures
        assert third["changed"] and third["digest"] == served.headers["Docker-Content-Digest"], third
        assert run.task("Push the PPS image", "cluster-2").get("skipped"), "the first cluster pushed for the others"
        ledger.record("secret", "fleet push in one run: a cluster's registry password in the run's output",
                      password not in run.stdout + run.stderr)
        assert password not in run.stdout + run.stderr
    assert spools(cache / "datarobot_mlops" / "spool") == [] if (cache / "datarobot_mlops" / "spool").exists() \
        else True


def pushed_by_first(run, host: str) -> dict:
    """A fleet's other cluster's result: its entry in the first cluster's result."""
    return run.task("The push's result", host)["ansible_facts"]["__pps_image_push"]


def test_in_one_run_two_clusters_of_one_registry_are_pushed_to_once(rig, tmp_path):
    """Three clusters, two of them with the same registry, repository and login: the run uploads each blob to that
    registry once, and both clusters get its result."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    with Fleet(tmp_path / "fleet", 2) as fleet, FaultProxy(int(fleet.addresses[0].rsplit(":", 1)[1])) as shared:
        through = f"127.0.0.1:{shared.port}"
        inventory = json.loads(Path(fleet.inventory([through, fleet.addresses[1]])).read_text())
        hosts = inventory["clusters"]["hosts"]
        hosts["cluster-2"] = json.loads(json.dumps(hosts["cluster-0"]))
        (tmp_path / "fleet.json").write_text(json.dumps(inventory))
        run = run_playbook(PLAYBOOK, inventory=str(tmp_path / "fleet.json"),
                           env=ansible_env(ANSIBLE_FORKS="3", XDG_CACHE_HOME=str(cache)),
                           extra_vars={"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "9.2.0"})
        assert run.returncode == 0, run.failure() + run.stderr[-2000:]
        uploads = [path for method, path, _status in shared.faults.seen
                   if method == "POST" and "/blobs/uploads/" in path]
        # the layers and the config, once, and the upload session of the push's check of the login, cancelled
        assert len(uploads) == LAYERS + 2, uploads
        cancelled = [path for method, path, _status in shared.faults.seen if method == "DELETE"]
        assert len(cancelled) == 1, cancelled
        served = fleet.manifests("9.2.0")
        assert len({manifest for manifest, _layers in served}) == 1, served
    own, twin = (run.task("Wait for the PPS push, a progress line every few seconds", "cluster-0"),
                 pushed_by_first(run, "cluster-2"))
    assert own["changed"] and twin["changed"] and twin["digest"] == own["digest"] == served[0][0], (own, twin)
    assert twin["image"] == f"{through}/{fleet.repo}:9.2.0"


def test_with_the_free_strategy_configured_each_cluster_pushes_for_itself(rig, tmp_path):
    """Fleet mode reads the other hosts' facts in step, which the free strategy does not keep: with it configured
    (ANSIBLE_STRATEGY, as ansible.cfg's `strategy` would), every cluster runs its own push, and the registries still
    get the same digests (through the spool), in one run and again as a no-op."""
    archive, cache = fleet_archive(tmp_path), tmp_path / "cache"
    with Fleet(tmp_path / "fleet", 2) as fleet:
        env = ansible_env(ANSIBLE_FORKS="2", XDG_CACHE_HOME=str(cache), ANSIBLE_STRATEGY="free")
        extra_vars = {"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "9.2.0"}
        run = run_playbook(PLAYBOOK, inventory=fleet.inventory(), env=env, extra_vars=extra_vars)
        assert run.returncode == 0, run.failure() + run.stderr[-2000:]
        for host in ("cluster-0", "cluster-1"):
            own = run.task("Push the PPS image", host)
            assert not own.get("skipped") and own["started"], (host, own)
            collected = run.task("Wait for the PPS push, a progress line every few seconds", host)
            assert collected["changed"] and not collected.get("fleet"), (host, collected)  # pushed for itself alone
        served = fleet.manifests("9.2.0")
        assert len({manifest for manifest, _layers in served}) == 1, served
        again = run_playbook(PLAYBOOK, inventory=fleet.inventory(), env=env, extra_vars=extra_vars)
        assert again.returncode == 0 and again.changed == 0, again.failure()
