"""Reliability suite, faults: each is injected on the rig (loopback only, bounded in time), the promise is checked
and one `fault` line goes to the ledger before the asserts.

Nothing shared is disturbed: registries are private processes, the API server is reached through a loopback proxy
that the test cuts, and DataRobot is a private instance of the rig's fake (tests/rig/fake_datarobot.py).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from ansible_cli import REPO, ansible_env, run_module, run_playbook
from conftest import dangling_tags, kubectl, no_traceback, push_outcome
from fault_proxy import FaultProxy
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_push import CHUNK
from fixtures.image_archives import write_docker_archive
from test_agent_deployment import AGENT_IMAGE, BROKEN_TAG, CHART, helm, history
from test_pps_image import assert_same_image, pulled_back

sys.path.insert(0, str(REPO / "tests" / "rig"))
import fake_datarobot  # noqa: E402
from processes import free_port  # noqa: E402
from registry import RegistryProcess  # noqa: E402

PPS = "datarobot_mlops.management_agent.pps_image"
AGENT = "datarobot_mlops.management_agent.agent_deployment"
ENVIRONMENT = "datarobot_mlops.management_agent.prediction_environment"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_for(what: str, ready: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


class Background(threading.Thread):
    """A call (an Ansible run) in a thread; `value` once joined."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call, self.value, self.error = call, None, None

    def run(self) -> None:
        try:
            self.value = self.call()
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float) -> Any:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"still running after {timeout:.0f}s")
        if self.error:
            raise self.error
        return self.value


# --- a loopback TCP proxy that can throttle, cut a connection after N bytes, and die like a restarted server ----

class TcpProxy:
    def __init__(self, upstream: int, rate: float | None = None) -> None:
        self.upstream, self.rate = upstream, rate  # rate: bytes/s towards upstream, per connection
        self.port = free_port()
        self.forwarded = 0  # bytes sent towards upstream
        self.cuts = 0
        self._cut_at: int | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def cut_after(self, count: int) -> None:
        """Drop the connection that carries the next `count` bytes towards upstream, once."""
        with self._lock:
            self._cut_at = self.forwarded + count

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """As a server process dying: the port refuses connections and every open one is reset."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            doomed, self._open = list(self._open), set()
        for sock in doomed:
            _drop(sock)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _address = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            _drop(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, source: socket.socket, target: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                cut = False
                if outbound:
                    with self._lock:
                        if self._cut_at is not None and self.forwarded + len(data) >= self._cut_at:
                            data, cut = data[:self._cut_at - self.forwarded], True
                            self._cut_at, self.cuts = None, self.cuts + 1
                        self.forwarded += len(data)
                target.sendall(data)
                if cut:
                    break
                if outbound and self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, target))
            _drop(source)
            _drop(target)


def _drop(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# --- registries --------------------------------------------------------------------------------------------------

class PrivateRegistry:
    """A docker-registry of this test only (plain HTTP, no auth), killable and restartable on the same storage."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = workdir / "registry.json"
        self.config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "registry-data")}, "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            # a fixed secret: upload sessions opened before a restart stay valid after it
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
        }))
        self.process: RegistryProcess | None = None

    def start(self) -> "PrivateRegistry":
        self.process = RegistryProcess(self.config, self.address, ready_status=200).__enter__()
        return self

    def kill(self) -> None:
        """kill -9 (no chance to finish anything)."""
        assert self.process and self.process.process
        self.process.process.kill()
        self.process.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process:
            self.process.__exit__()
            self.process = None


@pytest.fixture
def private_registry(rig, tmp_path):
    registry = PrivateRegistry(tmp_path).start()
    yield registry
    registry.stop()


class TagWatch(threading.Thread):
    """Checks every tag's blobs all along a push (the registry may be down meanwhile: those polls are skipped)."""

    def __init__(self, address: str, repo: str) -> None:
        super().__init__(daemon=True)
        self.address, self.repo = address, repo
        self.problems: list[str] = []
        self.polls = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                self.problems += dangling_tags(self.address, self.repo)
                self.polls += 1
            except (requests.RequestException, ValueError, KeyError):
                pass

    def stop(self) -> list[str]:
        self.done.set()
        self.join(timeout=30)
        return self.problems


def big_archive(tmp_path: Path, layers: int = 3, size: int = 6 * 1024 * 1024):
    """Random (incompressible) layers, so the upload takes as long as its size says."""
    return write_docker_archive(tmp_path / "big.tar", [f"datarobot/pps:{uuid.uuid4().hex[:6]}"],
                                [{f"opt/pps/part{index}.bin": os.urandom(size)} for index in range(layers)])


def pulled_or_empty(rig, image: str, tmp_path: Path) -> dict[str, Any]:
    """The image copied back with skopeo (which checks every digest), or {} when that fails: recorded, then asserted."""
    try:
        return pulled_back(rig, image, tmp_path, insecure=True)
    except AssertionError:
        return {}


def pps_args(address: str, repo: str, src: Path, **extra: Any) -> dict[str, Any]:
    return {"src": str(src), "name": f"{address}/{repo}", "tag": "1.0", "insecure": True, "cache": "", **extra}


def test_fault_registry_killed_mid_push(rig, private_registry, tmp_path, ledger):
    facts = big_archive(tmp_path)
    repo = unique("faults/killed")
    total = facts.path.stat().st_size
    proxy = TcpProxy(private_registry.port, rate=4 * 1024 * 1024).start()  # ~1.5s per layer: the kill lands mid-way
    watch = TagWatch(private_registry.address, repo)
    watch.start()
    started = time.monotonic()
    try:
        push = Background(lambda: run_module(PPS, pps_args(f"127.0.0.1:{proxy.port}", repo, facts.path)))
        push.start()
        wait_for("a third of the image uploaded", lambda: proxy.forwarded >= total // 3 or not push.is_alive(), 120)
        killed_at = proxy.forwarded
        private_registry.kill()
        time.sleep(1)
        private_registry.start()
        first = push.result(240)
        rerun = run_module(PPS, pps_args(f"127.0.0.1:{proxy.port}", repo, facts.path)) if first.failed else None
    finally:
        problems = watch.stop()
        proxy.stop()
    elapsed = time.monotonic() - started
    outcome = push_outcome(first, rerun, problems, private_registry.address, repo, facts,
                           lambda image: pulled_or_empty(rig, image, tmp_path))
    held = 0 < killed_at < total and outcome.succeeded
    ledger.record("fault", "registry killed (-9) mid-push, restarted on the same storage", held=held,
                  detail=f"killed after {killed_at}/{total} bytes; first run "
                         f"{'failed: ' + first.result.get('msg', '')[:80] if first.failed else 'completed by retrying'}"
                         f"; rerun {'needed' if outcome.rerun_needed else 'not needed'}; {watch.polls} tag polls, "
                         f"{len(outcome.problems)} dangling; pulled image verified={outcome.verified}; {elapsed:.0f}s")
    assert 0 < killed_at < total, "the kill did not land mid-upload"
    outcome.assert_held()
    assert_same_image(outcome.pulled, facts)


def test_fault_registry_connection_cut_after_n_bytes(rig, private_registry, tmp_path, ledger):
    facts = big_archive(tmp_path, layers=2)
    repo = unique("faults/cut")
    proxy = TcpProxy(private_registry.port).start()
    proxy.cut_after(3 * 1024 * 1024 + 12345)  # inside the first layer's body
    try:
        first = run_module(PPS, pps_args(f"127.0.0.1:{proxy.port}", repo, facts.path))
        problems = dangling_tags(private_registry.address, repo)
        rerun = run_module(PPS, pps_args(f"127.0.0.1:{proxy.port}", repo, facts.path)) if first.failed else None
    finally:
        proxy.stop()
    outcome = push_outcome(first, rerun, problems, private_registry.address, repo, facts,
                           lambda image: pulled_or_empty(rig, image, tmp_path))
    held = proxy.cuts == 1 and outcome.succeeded and not outcome.rerun_needed  # the same run resumes
    result = f"failed: {first.result.get('msg', '')[:100]}" if first.failed else "resumed and completed"
    ledger.record("fault", "registry connection cut after N bytes (TCP) mid-layer", held=held,
                  detail=f"cuts={proxy.cuts}; first run {result}; rerun "
                         f"{'needed' if outcome.rerun_needed else 'not needed'}; "
                         f"dangling={len(outcome.problems)}; pulled image verified={outcome.verified}")
    assert proxy.cuts == 1
    assert not first.failed, f"the run did not resume by itself: {first.result.get('msg')}"
    outcome.assert_held()
    assert_same_image(outcome.pulled, facts)


def test_fault_registry_keeps_part_of_a_cut_chunk(rig, tmp_path, ledger):
    """The registry receives part of a chunk before the connection is cut (it keeps those bytes, and its upload
    state no longer matches): the same run finishes, sending less than 1.2 times the image."""
    facts = big_archive(tmp_path, layers=1, size=4 * CHUNK)
    repo = unique("faults/partial")
    upstream = int(rig["RIG_INSECURE_REGISTRY"].rsplit(":", 1)[1])
    with FaultProxy(upstream) as proxy:
        proxy.faults.cut(2 * 1024 * 1024, lambda method, path: method == "PATCH", forward=True)
        first = run_module(PPS, pps_args(f"127.0.0.1:{proxy.port}", repo, facts.path, retries=3))
        problems = dangling_tags(rig["RIG_INSECURE_REGISTRY"], repo)
    sent, total = proxy.faults.body_bytes.get("PATCH", 0), facts.path.stat().st_size
    outcome = push_outcome(first, None, problems, rig["RIG_INSECURE_REGISTRY"], repo, facts,
                           lambda image: pulled_or_empty(rig, image, tmp_path))
    cut = sum(1 for seen in proxy.faults.seen if seen[2] == -1)
    held = cut == 1 and not first.failed and outcome.succeeded and sent < 1.2 * total
    ledger.record("fault", "registry keeps part of a cut chunk (upload state stale): same run resumes", held=held,
                  detail=f"cuts={cut}; run {'failed: ' + first.result.get('msg', '')[:100] if first.failed else 'completed'};"
                         f" sent {sent}/{total} bytes ({sent / total:.2f}x); pulled image verified={outcome.verified}")
    assert cut == 1 and not first.failed, first.result.get("msg")
    assert sent < 1.2 * total
    outcome.assert_held()
    assert_same_image(outcome.pulled, facts)


@pytest.fixture
def status_proxy(rig):
    upstream = int(rig["RIG_INSECURE_REGISTRY"].rsplit(":", 1)[1])
    with FaultProxy(upstream) as running:
        yield running


def timed_everything(times: list[float]) -> Callable[[str, str], bool]:
    def match(method: str, path: str) -> bool:
        times.append(time.monotonic())
        return True
    return match


@pytest.mark.parametrize("status", [503, 429])
def test_fault_registry_error_bursts_are_retried_with_backoff(rig, status_proxy, tmp_path, ledger, status):
    facts = big_archive(tmp_path, layers=2, size=64 * 1024)
    repo = unique(f"faults/burst{status}")
    times: list[float] = []
    status_proxy.faults.fail(3, status, timed_everything(times))
    outcome = run_module(PPS, pps_args(f"127.0.0.1:{status_proxy.port}", repo, facts.path))
    injected = sum(1 for seen in status_proxy.faults.seen if seen[2] == status)
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    backoff = len(gaps) >= 2 and gaps[0] >= 0.4 and gaps[1] > gaps[0]
    held = not outcome.failed and injected == 3 and backoff
    ledger.record("fault", f"registry answers a burst of 3 x {status}", held=held,
                  detail=f"{injected} x {status} answered, retried after {', '.join(f'{g:.2f}s' for g in gaps[:3])}; "
                         + ("completed" if not outcome.failed else "failed: " + outcome.result.get("msg", "")))
    assert not outcome.failed, outcome.result.get("msg")
    assert injected == 3 and backoff, gaps
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


def test_fault_registry_errors_beyond_the_retry_limit_fail_clearly(rig, status_proxy, tmp_path, ledger):
    facts = big_archive(tmp_path, layers=2, size=64 * 1024)
    repo = unique("faults/down")
    times: list[float] = []
    status_proxy.faults.fail(1000, 503, timed_everything(times))
    started = time.monotonic()
    outcome = run_module(PPS, pps_args(f"127.0.0.1:{status_proxy.port}", repo, facts.path, retries=3))
    elapsed = time.monotonic() - started
    message = outcome.result.get("msg", "")
    tagged = requests.get(f"http://{rig['RIG_INSECURE_REGISTRY']}/v2/{repo}/tags/list", timeout=10).status_code == 200
    clear = "answered 503" in message and "after 3 attempts" in message and no_traceback(outcome.stdout,
                                                                                         outcome.stderr)
    held = outcome.failed and clear and len(times) == 3 and not tagged
    ledger.record("fault", "registry answers 503 beyond the retry limit", held=held,
                  detail=f"{len(times)} attempts in {elapsed:.1f}s; message: {message[:160]}")
    assert outcome.failed and clear, message
    assert len(times) == 3 and not tagged  # exactly the 3 attempts asked for, then the clear failure above


# --- the API server restarted during a stage run -----------------------------------------------------------------

def api_server_port() -> int:
    server = json.loads(Path(os.environ["KUBECONFIG"]).read_text())["clusters"][0]["cluster"]["server"]
    return int(server.rsplit(":", 1)[1])


def registry_objects(namespace: str) -> list[tuple[str, str]]:
    found = json.loads(kubectl("-n", namespace, "get", "secrets,configmaps,serviceaccounts", "-o", "json").stdout)
    return sorted((item["kind"], item["metadata"]["name"]) for item in found["items"]
                  if item["metadata"]["name"] not in ("kube-root-ca.crt", "default"))


@pytest.fixture
def stage_namespace(rig):
    name = unique("t-fault-apiserver")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_fault_api_server_restarted_during_a_stage_run(rig, stage_namespace, tmp_path, ledger):
    proxy = TcpProxy(api_server_port()).start()
    kubeconfig = tmp_path / "kubeconfig"
    config = json.loads(Path(os.environ["KUBECONFIG"]).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig.write_text(json.dumps(config))
    env = ansible_env(KUBECONFIG=str(kubeconfig), K8S_AUTH_KUBECONFIG=str(kubeconfig))
    extra = {"mlops_namespace": stage_namespace, "mlops_registry_host": rig["RIG_REGISTRY"],
             "mlops_registry_username": rig["RIG_REGISTRY_USER"], "mlops_registry_password": rig["RIG_REGISTRY_PASSWORD"],
             "mlops_registry_ca_path": rig["RIG_REGISTRY_CA"]}

    def exists() -> bool:
        return kubectl("get", "namespace", stage_namespace, check=False).returncode == 0

    try:
        run = Background(lambda: run_playbook("playbooks/registry.yml", extra_vars=extra, env=env))
        run.start()
        wait_for("the stage's first object", lambda: exists() or not run.is_alive(), 120, every=0.02)
        proxy.stop()  # the API server is gone for the rest of this run
        down_at = time.monotonic()
        cut = run.result(300)
        down_for = time.monotonic() - down_at
        partial = registry_objects(stage_namespace)
        proxy.start()  # back
        rerun = run_playbook("playbooks/registry.yml", extra_vars=extra, env=env)
        objects = registry_objects(stage_namespace)
        again = run_playbook("playbooks/registry.yml", extra_vars=extra, env=env)
    finally:
        proxy.stop()
    message = cut.failure()
    clear = cut.returncode != 0 and bool(message) and no_traceback(message) and "MODULE FAILURE" not in message
    expected = [("ConfigMap", "registry-ca"), ("Secret", "registry-creds")]
    converged = rerun.returncode == 0 and again.returncode == 0 and again.changed == 0
    duplicates = len(objects) - len(set(objects))
    held = clear and converged and objects == expected and duplicates == 0 and down_for < 120
    ledger.record("fault", "API server gone (connections reset, port closed) during the registry stage", held=held,
                  detail=f"cut run: rc={cut.returncode}, msg={message[:250]!r}; left {partial}; rerun rc="
                         f"{rerun.returncode}; third run changed={again.changed}; objects {objects}")
    assert clear, message or cut.stdout[-3000:]
    assert rerun.returncode == 0, rerun.failure()
    assert again.returncode == 0 and again.changed == 0, again.stdout[-3000:]
    assert objects == expected
    assert rig["RIG_REGISTRY_PASSWORD"] not in cut.stdout + cut.stderr


# --- the agent's Helm release --------------------------------------------------------------------------------------

def agent_values(tag: str = "9.2.0", replicas: int = 1) -> dict[str, Any]:
    return {"managementAgent": {"repository": AGENT_IMAGE, "tag": tag, "replicas": replicas},
            "trackingAgent": {"enabled": False},
            "datarobot": {"dataRobotUrl": "https://app.datarobot.example", "apiSecretName": "mlops-api-key",
                          "predictionEnvId": "65f1c2a9e4b0a1b2c3d4e5f6"}}


@pytest.fixture
def namespace(rig):
    """A namespace of this test alone (unique: a rerun does not wait for the last one to be deleted)."""
    name = unique("t-fault-helm")
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def release(namespace):
    name = unique("bosun")

    def args(**overrides: Any) -> dict[str, Any]:
        return {"chart_ref": CHART, "release_name": name, "release_namespace": namespace, "values": agent_values(),
                "wait_timeout": 60, **overrides}

    yield name, args
    helm("uninstall", name, "-n", namespace, "--wait", "--timeout", "60s", check=False)


def agent_container(namespace: str, name: str) -> tuple[str, int]:
    live = json.loads(kubectl("-n", namespace, "get", "deployment", f"{name}-datarobot-management-agent",
                              "-o", "json").stdout)
    return live["spec"]["template"]["spec"]["containers"][0]["image"], live["spec"]["replicas"]


def test_fault_failed_helm_upgrade_is_rolled_back(release, namespace, ledger):
    name, args = release
    installed = run_module(AGENT, args())
    assert installed.result.get("changed") is True, installed.result.get("msg")
    started = time.monotonic()
    broken = run_module(AGENT, args(values=agent_values(tag=BROKEN_TAG), wait_timeout=15))
    elapsed = time.monotonic() - started
    message = broken.result.get("msg", "")
    pods = (broken.result.get("diagnostics") or {}).get("pods") or []
    revisions = [(entry["revision"], entry["status"]) for entry in history(name, namespace)]
    image = agent_container(namespace, name)[0]
    diagnosed = bool(pods) and pods[0]["pod"] in message and "ImagePullBackOff" in message
    held = (broken.failed and "Rolled back to revision 1" in message and diagnosed
            and revisions == [(1, "superseded"), (2, "failed"), (3, "deployed")] and image == f"{AGENT_IMAGE}:9.2.0"
            and no_traceback(broken.stdout, broken.stderr))
    ledger.record("fault", "helm upgrade whose agent never becomes ready (ImagePullBackOff)", held=held,
                  detail=f"history {revisions}; live image {image}; {elapsed:.0f}s; msg: {message[:150]}")
    assert broken.failed and "Rolled back to revision 1" in message, message
    assert diagnosed, message
    assert revisions == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert image == f"{AGENT_IMAGE}:9.2.0"
    assert no_traceback(broken.stdout, broken.stderr)


def test_fault_hopeless_rollout_ends_the_wait_early(release, namespace, ledger):
    name, args = release
    assert run_module(AGENT, args()).result.get("changed") is True
    started = time.monotonic()
    # wait_timeout 600: without the early stop this run would take ten minutes
    broken = run_module(AGENT, args(values=agent_values(tag=BROKEN_TAG), wait_timeout=600, stuck_timeout=10))
    elapsed = time.monotonic() - started
    message = broken.result.get("msg", "")
    revisions = [(entry["revision"], entry["status"]) for entry in history(name, namespace)]
    image = agent_container(namespace, name)[0]
    rolled_back = revisions == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    held = (broken.failed and "was stopped before its timeout" in message and "ImagePullBackOff" in message
            and "Rolled back to revision 1" in message and rolled_back
            and image == f"{AGENT_IMAGE}:9.2.0" and no_traceback(broken.stdout, broken.stderr))
    ledger.record("fault", "agent stuck in ImagePullBackOff with wait_timeout 600: the wait ends after stuck_timeout",
                  held=held, detail=f"{elapsed:.0f}s; history {revisions}; msg: {message[:200]}")
    assert broken.failed and "was stopped before its timeout" in message and "ImagePullBackOff" in message, message
    assert "Rolled back to revision 1" in message, message
    assert revisions == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert image == f"{AGENT_IMAGE}:9.2.0"
    # the wait was ended by the stuck watch (its reason: a container stuck for stuck_timeout), not by wait_timeout
    assert "was stopped before its timeout: pod " in message and " has been in " in message, message
    assert "(waited up to 600s)" not in message, message
    assert no_traceback(broken.stdout, broken.stderr)


def test_fault_two_runs_at_once_on_the_same_release(release, namespace, ledger):
    name, args = release
    assert run_module(AGENT, args()).result.get("changed") is True
    sets = {"a": agent_values(tag="9.2.1", replicas=2), "b": agent_values(tag="9.2.2", replicas=3)}
    barrier = threading.Barrier(2)

    def run(key: str) -> Any:
        barrier.wait(timeout=30)
        return run_module(AGENT, args(values=sets[key]))

    runs = {key: Background(lambda key=key: run(key)) for key in sets}
    for thread in runs.values():
        thread.start()
    outcomes = {key: thread.result(300) for key, thread in runs.items()}
    revisions = history(name, namespace)
    stored = json.loads(helm("get", "values", name, "-n", namespace, "-o", "json").stdout)
    live = agent_container(namespace, name)
    winner = next((key for key, values in sets.items() if stored == values), None)
    live_matches = winner is not None and live == (f"{AGENT_IMAGE}:{sets[winner]['managementAgent']['tag']}",
                                                   sets[winner]["managementAgent"]["replicas"])
    busy = [key for key, outcome in outcomes.items()
            if outcome.failed and "Another operation is in progress" in outcome.result.get("msg", "")]
    succeeded = [key for key, outcome in outcomes.items() if not outcome.failed]
    # one succeeded and the other succeeded after it (serially) or was turned away clearly
    behaved = len(succeeded) == 2 or (len(succeeded) == 1 and len(busy) == 1)
    statuses = [entry["status"] for entry in revisions]
    settled = statuses[-1] == "deployed" and not any(status.startswith("pending") for status in statuses)
    clean = all(no_traceback(outcome.stdout, outcome.stderr) for outcome in outcomes.values())
    held = behaved and settled and live_matches and clean
    ledger.record("fault", "two agent_deployment runs at once on one release", held=held,
                  detail=f"succeeded {succeeded}, turned away {busy}; history "
                         f"{[(entry['revision'], entry['status']) for entry in revisions]}; release holds set "
                         f"{winner}, live {live}; messages: "
                         + " | ".join(o.result.get("msg", "")[:100] for o in outcomes.values() if o.failed))
    assert behaved, {key: outcome.result.get("msg") for key, outcome in outcomes.items()}
    assert settled, revisions
    assert winner is not None and live_matches, (stored, live)
    assert clean


# --- DataRobot down, failing, slow ---------------------------------------------------------------------------------

class PrivateDataRobot:
    """The rig's fake DataRobot API, served from this test (plain HTTP): its faults and state are ours alone."""

    def __init__(self, workdir: Path, slow_creates: float = 0) -> None:
        self.token = secrets.token_urlsafe(24)
        self.state = fake_datarobot.State(workdir / "datarobot-state.json", self.token)
        handler = fake_datarobot.make_handler(self.state)
        creates_delay = slow_creates

        class Handler(handler):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if creates_delay and self.path.startswith("/api/v2/predictionEnvironments"):
                    time.sleep(creates_delay)  # slow, yet it does the work (as a real overloaded server may)
                super().do_POST()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/api/v2"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fault(self, **fault: Any) -> None:
        requests.post(self.endpoint.replace("/api/v2", "/_fake/faults"), json=fault, timeout=10).raise_for_status()

    def snapshot(self) -> str:
        with self.state.lock:
            return json.dumps(self.state.environments, sort_keys=True)

    def names(self) -> list[str]:
        with self.state.lock:
            return sorted(environment["name"] for environment in self.state.environments.values()
                          if not environment.get("isDeleted"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def datarobot(rig, tmp_path):
    made: list[PrivateDataRobot] = []

    def make(**kwargs: Any) -> PrivateDataRobot:
        made.append(PrivateDataRobot(tmp_path, **kwargs))
        return made[-1]

    yield make
    for instance in made:
        instance.close()


def dead_endpoint() -> str:
    return f"https://127.0.0.1:{free_port()}/api/v2"  # nothing listens there


@pytest.mark.parametrize("fault", ["500-burst", "slow", "down"])
def test_fault_datarobot_failing_fails_clearly_and_changes_nothing(rig, datarobot, ledger, fault):
    api = datarobot()
    api.fault(status=500, count=100) if fault == "500-burst" else api.fault(delay=3, count=100)
    before = api.snapshot()
    endpoint = dead_endpoint() if fault == "down" else api.endpoint
    started = time.monotonic()
    outcome = run_module(ENVIRONMENT, {"name": unique("env-fault"), "endpoint": endpoint, "api_token": api.token,
                                       "timeout": 1, "allow_insecure_http": True})  # the private API is plain HTTP
    elapsed = time.monotonic() - started
    message = outcome.result.get("msg", "")
    expected = {"500-burst": "answered 500 to GET predictionEnvironments/ after 4 attempts",
                "slow": f"Cannot reach DataRobot at {api.endpoint}/ (tried 4 times)",
                "down": f"Cannot reach DataRobot at {endpoint}/ (tried 4 times)"}[fault]
    leaked = api.token in outcome.stdout + outcome.stderr
    unchanged = api.snapshot() == before
    held = (outcome.failed and expected in message and no_traceback(outcome.stdout, outcome.stderr) and unchanged
            and not leaked)
    ledger.record("fault", f"DataRobot API {fault} (prediction_environment)", held=held,
                  detail=f"{elapsed:.1f}s; state unchanged={unchanged}; msg: {message[:160]}")
    assert outcome.failed and expected in message, message
    assert unchanged and not leaked  # attempts are bounded: the message above says "after/tried 4"


def test_fault_datarobot_slow_to_create_leaves_no_duplicate(rig, datarobot, ledger):
    """A create that the server carries out but answers after the client's timeout: no second environment."""
    api = datarobot(slow_creates=2.5)
    name = unique("env-slow-create")
    args = {"name": name, "endpoint": api.endpoint, "api_token": api.token, "timeout": 1, "allow_insecure_http": True}
    first = run_module(ENVIRONMENT, args)
    time.sleep(3)  # let the server finish what it was asked
    after_first = api.names().count(name)
    rerun = run_module(ENVIRONMENT, args)
    final = api.names().count(name)
    first_ok = not first.failed or ("Cannot reach DataRobot" in first.result.get("msg", "")
                                    or "did not answer" in first.result.get("msg", ""))
    held = first_ok and after_first == 1 and not rerun.failed and final == 1
    ledger.record("fault", "DataRobot slow to answer a create (timeout), then a rerun", held=held,
                  detail=f"first run {'failed: ' + first.result.get('msg', '')[:120] if first.failed else 'ok'}; "
                         f"environments named so after it: {after_first}; rerun "
                         f"{'failed: ' + rerun.result.get('msg', '')[:120] if rerun.failed else 'ok'}; now {final}")
    assert first_ok, first.result.get("msg")
    assert after_first == 1, f"{after_first} environments named {name} after a timed-out create"
    assert not rerun.failed and final == 1, rerun.result.get("msg")


def test_fault_datarobot_down_during_a_site_run_changes_nothing_in_the_cluster(rig, tmp_path, ledger):
    """site.yml's DataRobot stage fails: the agent stage after it never touches the cluster."""
    namespace, release_name = unique("t-fault-dr"), unique("bosun")
    endpoint = dead_endpoint()
    run = run_playbook("site.yml", tags="prediction_environment,management_agent", extra_vars={
        # the token with the endpoint: the environment's (the rig's) is for DATAROBOT_ENDPOINT only
        "mlops_datarobot_endpoint": endpoint, "mlops_datarobot_api_token": rig["DATAROBOT_API_TOKEN"],
        "mlops_prediction_environment_name": unique("env-site"),
        "mlops_namespace": namespace, "mlops_management_agent_release_name": release_name,
        "mlops_management_agent_chart_ref": CHART,
        "_mlops": {"agent_images": {"management_agent": {"repository": AGENT_IMAGE, "tag": "9.2.0"}}}})
    message = run.failure()
    # the agent stage's own tasks (site.yml's first play only checks every stage's settings, touching nothing)
    agent_tasks = [task["task"]["name"] for play in run.document.get("plays", [])
                   if not play["play"]["name"].startswith("Every stage's settings") for task in play["tasks"]
                   if "management_agent :" in task["task"]["name"]]
    created = kubectl("get", "namespace", namespace, check=False).returncode == 0
    releases = helm("list", "-A", "-o", "json").stdout
    held = (run.returncode != 0 and f"Cannot reach DataRobot at {endpoint}/" in message and not agent_tasks
            and not created and release_name not in releases and no_traceback(run.stdout, run.stderr))
    ledger.record("fault", "DataRobot API down during site.yml (cluster untouched)", held=held,
                  detail=f"rc={run.returncode}; agent tasks run: {agent_tasks}; namespace created={created}; "
                         f"msg: {message[:140]}")
    assert run.returncode != 0 and f"Cannot reach DataRobot at {endpoint}/" in message, message or run.stderr
    assert not agent_tasks and not created and release_name not in releases
