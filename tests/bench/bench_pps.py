"""`make bench`: pps_image's daemonless push against its peers, side by side on the same archive.

Builds (once, cached) a docker-save archive of real files (layers of /usr
content, >= 1 GiB) in plain and gzip form like the vendor's, then pushes it
with each tool into a fresh repository of the rig's HTTP registry and prints
seconds, the ratio to skopeo, and the client's peak RSS. Nothing here passes
or fails on timings; the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "rig"))
from processes import free_port  # noqa: E402  the rig's helpers
from registry import RegistryProcess  # noqa: E402
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "datarobot-mlops-bench"))
RIG_CACHE = Path(os.environ.get("RIG_BIN_CACHE", Path.home() / ".cache" / "datarobot-mlops-rig"))
CRANE_VERSION = "v0.22.1"
LAYER_SOURCES = ["/usr/local/go", "/usr/share", "/usr/lib/x86_64-linux-gnu", "/usr/lib/python3", "/usr/bin"]
TARGET_BYTES = 1200 * 2**20


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _layer(source: str, path: Path, budget: int) -> int:
    """A layer tar of regular files under `source`, up to `budget` bytes, in a stable order."""
    size = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                try:
                    if not os.path.isfile(full) or os.path.islink(full):
                        continue
                    file_size = os.path.getsize(full)
                    if size + file_size > budget:
                        return size
                    info = tar.gettarinfo(full, arcname=full.lstrip("/"))
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    with open(full, "rb") as handle:
                        tar.addfile(info, handle)
                    size += file_size
                except OSError:
                    continue
    return size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def build_archive() -> tuple[Path, Path]:
    plain, gz = CACHE / "pps-bench.tar", CACHE / "pps-bench.tar.gz"
    if plain.exists() and gz.exists():
        return plain, gz
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / "layers"
    work.mkdir(exist_ok=True)
    layers, total = [], 0
    for index, source in enumerate(LAYER_SOURCES):
        if total >= TARGET_BYTES or not os.path.isdir(source):
            continue
        path = work / f"layer{index}.tar"
        total += _layer(source, path, min(400 * 2**20, TARGET_BYTES - total))
        layers.append(path)
        log(f"layer {path.name} from {source}: {path.stat().st_size / 2**20:.0f} MiB")
    diff_ids = [_sha256(p) for p in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["datarobot/datarobot-portable-prediction-api:bench"],
                            "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]).encode()
    with tarfile.open(f"{plain}.tmp", "w") as tar:
        for path, diff_id in zip(layers, diff_ids):
            tar.add(path, arcname=f"{diff_id[7:]}/layer.tar")
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(f"{plain}.tmp", plain)
    log(f"archive {plain} {plain.stat().st_size / 2**30:.2f} GiB; compressing (gzip -6, like the vendor's)")
    subprocess.run(f"gzip -6 -c {shlex.quote(str(plain))} > {shlex.quote(str(gz))}.tmp", shell=True, check=True)
    os.replace(f"{gz}.tmp", gz)
    for path in layers:
        path.unlink()
    return plain, gz


def crane() -> Path | None:
    out = RIG_CACHE / f"crane-{CRANE_VERSION}"
    binary = out / "crane"
    if not binary.exists():
        log(f"building crane {CRANE_VERSION} from the Go module proxy")
        proc = subprocess.run(["go", "install", f"github.com/google/go-containerregistry/cmd/crane@{CRANE_VERSION}"],
                              env={**os.environ, "GOBIN": str(out), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            log(f"crane did not build, left out: {proc.stderr.strip()[-300:]}")
            return None
    return binary


class FreshRegistry:
    """A new, empty docker-registry on loopback (HTTP) for one run, so no tool finds blobs to reuse."""

    def __init__(self, name: str) -> None:
        self.root = CACHE / "registries" / name
        self.process: RegistryProcess | None = None
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self) -> "FreshRegistry":
        subprocess.run(["rm", "-rf", str(self.root)], check=True)
        self.root.mkdir(parents=True)
        config = self.root / "config.json"
        config.write_text(json.dumps({"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
                                      "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
                                      "http": {"addr": self.address}}))
        self.process = RegistryProcess(config, self.address, ready_status=200).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.process:
            self.process.__exit__()
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


class FreshPodman:
    """podman's Docker API with empty storage, trusting one HTTP registry, for the daemon path."""

    def __init__(self, registry: str) -> None:
        self.root = CACHE / "podman"
        self.registry = registry
        self.socket = self.root / "podman.sock"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str:
        subprocess.run(["rm", "-rf", str(self.root)], check=True)
        self.root.mkdir(parents=True)
        conf = self.root / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{self.registry}"\ninsecure = true\n')
        self.process = subprocess.Popen(
            ["podman", f"--root={self.root / 'storage'}", f"--runroot={self.root / 'run'}", "--storage-driver=vfs",
             "--cgroup-manager=cgroupfs", "--events-backend=file", "system", "service", "--time=0",
             f"unix://{self.socket}"], env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return f"unix://{self.socket}"

    def __exit__(self, *exc) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


def timed(name: str, argv: list[str], shell: bool = False) -> dict:
    """Run under /usr/bin/time for the peak RSS of the client process."""
    wrapped = ["/usr/bin/time", "-f", "%M"] + (["sh", "-c", argv[0]] if shell else argv)
    started = time.monotonic()
    proc = subprocess.run(wrapped, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError(f"{name} failed: {proc.stderr[-1500:]}")
    rss_kb = int(proc.stderr.strip().splitlines()[-1])
    log(f"{name}: {seconds:.1f}s, peak RSS {rss_kb / 1024:.0f} MiB")
    return {"name": name, "seconds": seconds, "rss_mib": rss_kb / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-daemon", action="store_true", help="leave out the (slow) Docker API path")
    args = parser.parse_args()

    plain, gz = build_archive()
    size_gib = plain.stat().st_size / 2**30
    log(f"archive: {size_gib:.2f} GiB tar, {gz.stat().st_size / 2**30:.2f} GiB tar.gz")
    push = [str(BIN / "python"), str(REPO / "tools" / "pps_push.py"), "--insecure", "--quiet"]
    target = "bench/datarobot-portable-prediction-api"
    runs = []

    def run_fresh(name: str, argv_for: "Callable[[str], list[str]]", shell: bool = False) -> None:
        with FreshRegistry(name.split(",")[0].replace(" ", "-").replace("+", "")) as registry:
            runs.append(timed(name, argv_for(registry.address), shell=shell))

    run_fresh("pps_image direct, .tar.gz", lambda r: push + ["--cache", "", str(gz), f"{r}/{target}", "1"])
    run_fresh("pps_image direct, .tar", lambda r: push + ["--cache", "", str(plain), f"{r}/{target}", "1"])
    with FreshRegistry("noop") as registry:
        noop_cache = str(CACHE / "noop-cache.json")
        Path(noop_cache).unlink(missing_ok=True)
        argv = push + ["--cache", noop_cache, str(gz), f"{registry.address}/{target}", "1"]
        timed("(pps_image first push, for the no-op run)", argv)
        runs.append(timed("pps_image no-op re-run, .tar.gz", argv))
    unpacked = shlex.quote(str(CACHE / "gunzipped.tar"))
    run_fresh("gunzip + skopeo copy, .tar.gz", lambda r: [
        f"gunzip -c {shlex.quote(str(gz))} > {unpacked} && skopeo copy --dest-tls-verify=false "
        f"docker-archive:{unpacked} docker://{r}/{target}:1; rc=$?; rm -f {unpacked}; exit $rc"], shell=True)
    run_fresh("skopeo copy, .tar", lambda r: ["skopeo", "copy", "--dest-tls-verify=false", f"docker-archive:{plain}",
                                              f"docker://{r}/{target}:1"])
    crane_binary = crane()
    if crane_binary:
        run_fresh("crane push, .tar", lambda r: [str(crane_binary), "push", "--insecure", str(plain), f"{r}/{target}:1"])
    if not args.skip_daemon:
        with FreshRegistry("daemon") as registry, FreshPodman(registry.address) as docker_host:
            code = (
                "import sys; sys.path.insert(0, {collections!r});"
                "from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _daemon_push as d;"
                "from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive "
                "import Archive;"
                "from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference "
                "import Repository; a = Archive.scan({gz!r}); "
                "d.push_with_daemon(a, a.select(None), Repository.parse({target!r}), ['1'], None, {host!r}, "
                "3600)").format(collections=str(REPO / ".collections"), gz=str(gz),
                                target=f"{registry.address}/{target}", host=docker_host)
            runs.append(timed("docker SDK via podman API (load, tag, push), .tar.gz", [str(BIN / "python"), "-c", code]))

    by_name = {run["name"]: run for run in runs}
    skopeo_gz = by_name["gunzip + skopeo copy, .tar.gz"]["seconds"]
    skopeo_tar = by_name["skopeo copy, .tar"]["seconds"]
    print(f"\nPPS push benchmark: {size_gib:.2f} GiB image ({gz.stat().st_size / 2**30:.2f} GiB .tar.gz), "
          f"{os.cpu_count()} cores, a fresh HTTP docker-registry on loopback for each run\n")
    print(f"{'tool':55} {'seconds':>8} {'vs skopeo':>10} {'peak RSS':>9}")
    for run in runs:
        baseline = skopeo_gz if run["name"].endswith(".tar.gz") else skopeo_tar
        print(f"{run['name']:55} {run['seconds']:8.1f} {run['seconds'] / baseline:9.2f}x {run['rss_mib']:6.0f} MiB")
    ours_gz = by_name["pps_image direct, .tar.gz"]
    ours_tar = by_name["pps_image direct, .tar"]
    print("\ntargets (printed, not enforced):")
    print(f"  .tar.gz: pps_image / (gunzip + skopeo) = {ours_gz['seconds'] / skopeo_gz:.2f}  (target <= 0.40)")
    print(f"  .tar:    pps_image / skopeo            = {ours_tar['seconds'] / skopeo_tar:.2f}  (target <= 0.60)")
    daemon_run = next((r for r in runs if r["name"].startswith("docker SDK")), None)
    if daemon_run:
        print(f"  daemon path / pps_image (.tar.gz)     = {daemon_run['seconds'] / ours_gz['seconds']:.1f}x "
              "(target >= 5x)")
    print(f"  pps_image peak RSS                    = {max(ours_gz['rss_mib'], ours_tar['rss_mib']):.0f} MiB "
          "(target <= 256 MiB)")
    print(f"  no-op re-run                          = {by_name['pps_image no-op re-run, .tar.gz']['seconds']:.2f}s "
          "(process start included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
