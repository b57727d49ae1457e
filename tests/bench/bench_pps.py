"""`make bench`: pps_image's daemonless push against its peers, side by side on the same archive.

Builds (once, cached) a docker-save archive of real files (layers of /usr
content, >= 1 GiB) in plain and gzip form like the vendor's, then pushes it
with each tool into a fresh HTTP docker-registry on loopback and prints
seconds, the ratio to skopeo, and the client's peak RSS. The headline pair
(pps_image and gunzip + skopeo on the .tar.gz) runs interleaved for several
rounds, and the median ratio is reported. Then: where pps_image's time goes
(CPU seconds per phase, and the registry process's own CPU), check mode on a
changed and an unchanged tag, and a 4 GiB .tar.gz of generated, compressible,
never-seen-before content for peak memory. Nothing here passes or fails on
timings; the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable

from isal import igzip

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "rig"))
from processes import free_port  # noqa: E402  the rig's helpers
from registry import RegistryProcess  # noqa: E402
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "datarobot-mlops-bench"))
RIG_CACHE = Path(os.environ.get("RIG_BIN_CACHE", Path.home() / ".cache" / "datarobot-mlops-rig"))
CRANE_VERSION = "v0.22.1"
DISTRIBUTION_VERSION = "v3.0.0"  # the registry `make bench-fleet` builds with this machine's Go (see built_registry)
LAYER_SOURCES = ["/usr/local/go", "/usr/share", "/usr/lib/x86_64-linux-gnu", "/usr/lib/python3", "/usr/bin"]
TARGET_BYTES = 1200 * 2**20
BIG_LAYERS, BIG_LAYER_BYTES = 8, 512 * 2**20  # the 4 GiB archive


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


def _generated_layer(path: Path, size: int) -> str:
    """A layer tar of `size` bytes of files whose content is new (os.urandom) yet compresses like binaries do.

    Every 32 KiB: 12 KiB of random bytes and one random 4 KiB piece five times (deflate finds some of the repeats
    in its window: the archive's fast gzip leaves about 60%), and no registry can have seen it before. Returns its
    diff_id.
    """
    digest = hashlib.sha256()
    with open(path, "wb") as raw:
        class Hashing:
            def write(self, data: bytes) -> int:
                digest.update(data)
                return raw.write(data)

        with tarfile.open(fileobj=Hashing(), mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            file_size = 16 * 2**20
            for index in range(size // file_size):
                info = tarfile.TarInfo(f"opt/generated/{index:05d}.bin")
                info.size = file_size
                tar.addfile(info, io.BytesIO(b"".join(os.urandom(12 * 2**10) + os.urandom(4 * 2**10) * 5
                                                      for _block in range(file_size // (32 * 2**10)))))
    return "sha256:" + digest.hexdigest()


def build_big_archive() -> Path:
    """(once, cached) a 4 GiB docker-save .tar.gz of generated content: the memory figure's archive."""
    path = CACHE / "pps-bench-4g.tar.gz"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"generating a {BIG_LAYERS * BIG_LAYER_BYTES / 2**30:.0f} GiB archive of new content (once)")
    scratch = CACHE / "big-layer.tar"
    diff_ids = []
    with igzip.open(f"{path}.tmp", "wb", compresslevel=1) as packed, tarfile.open(fileobj=packed, mode="w|") as outer:
        for _index in range(BIG_LAYERS):
            diff_id = _generated_layer(scratch, BIG_LAYER_BYTES)
            outer.add(scratch, arcname=f"{diff_id[7:]}/layer.tar")
            diff_ids.append(diff_id)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = json.dumps([{"Config": config_name, "RepoTags": ["bench/big:1"],
                                "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]).encode()
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    scratch.unlink()
    os.replace(f"{path}.tmp", path)
    return path


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


def built_registry() -> Path:
    """The distribution registry (the code Debian's docker-registry packages) at DISTRIBUTION_VERSION, built once
    with this machine's Go from the Go module proxy, cached beside the rig's binaries.

    Debian's docker-registry 2.8.2 is built with Go 1.19, whose sha256 does not use the CPU's SHA instructions: it
    spends about 0.8 CPU s per 256 MiB received, twice what the same code built with a current Go spends. Where the
    registries share the pushing machine's cores (a fleet bench), that makes every extra registry look costlier than
    any registry of a real fleet is to the controller."""
    out = RIG_CACHE / f"distribution-{DISTRIBUTION_VERSION}"
    binary = out / "registry"
    if not binary.exists():
        log(f"building the distribution registry {DISTRIBUTION_VERSION} from the Go module proxy (about a minute)")
        subprocess.run(["go", "install", f"github.com/distribution/distribution/v3/cmd/registry@{DISTRIBUTION_VERSION}"],
                       env={**os.environ, "GOBIN": str(out), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}, check=True)
    return binary


class FreshRegistry:
    """A new, empty docker-registry on loopback (HTTP) for one run, so no tool finds blobs to reuse."""

    def __init__(self, name: str, binary: Path | None = None, storage: Path | None = None) -> None:
        self.root = (storage or CACHE / "registries") / name
        self.binary = binary
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
        self.process = RegistryProcess(config, self.address, ready_status=200,
                                       binary=str(self.binary) if self.binary else None).__enter__()
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


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(name: str, argv: list[str], shell: bool = False, registry: "FreshRegistry | None" = None) -> dict:
    """Run under /usr/bin/time for the client's peak RSS and CPU; the registry's CPU over the same run."""
    wrapped = ["/usr/bin/time", "-f", "%M %U %S"] + (["sh", "-c", argv[0]] if shell else argv)
    registry_pid = registry.process.process.pid if registry and registry.process else None
    registry_before = process_cpu(registry_pid) if registry_pid else 0.0
    started = time.monotonic()
    proc = subprocess.run(wrapped, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError(f"{name} failed: {proc.stderr[-1500:]}")
    lines = proc.stderr.strip().splitlines()
    rss_kb, user, system = lines[-1].split()
    run = {"name": name, "seconds": seconds, "rss_mib": int(rss_kb) / 1024, "cpu": float(user) + float(system),
           "registry_cpu": process_cpu(registry_pid) - registry_before if registry_pid else None,
           "stdout": proc.stdout.strip()}
    for line in lines[:-1]:
        if line.startswith('{"phases"'):
            run.update(json.loads(line))
    log(f"{name}: {seconds:.1f}s, peak RSS {run['rss_mib']:.0f} MiB, client CPU {run['cpu']:.1f}s")
    return run


PHASE_TEXT = {"decompress": "decompress the .tar.gz (isal)", "read": "read layer bytes (incl. decompress)",
              "hash_layer": "sha256 of the layers (diff_id check)", "compress": "gzip the layers (threads)",
              "hash_blob": "sha256 of the compressed blobs", "upload": "PATCH the blobs (wall: waiting too)"}


def print_phases(run: dict) -> None:
    """Where pps_image's time went: CPU seconds per phase (summed over threads), and the registry's own CPU."""
    print(f"\nwhere the time goes: {run['name']} ({run['seconds']:.1f}s wall, client CPU {run['cpu']:.1f}s)\n")
    print(f"{'phase':42} {'CPU s':>7} {'wall s':>7} {'MiB':>7}")
    for phase, figures in run.get("phases", {}).items():
        print(f"{PHASE_TEXT.get(phase, phase):42} {figures['cpu']:7.2f} {figures['wall']:7.2f} "
              f"{figures['bytes'] / 2**20:7.0f}")
    if run.get("registry_cpu") is not None:
        print(f"{'the registry process (its own work)':42} {run['registry_cpu']:7.2f}")


def paired(rounds: int, ours: Callable[[], dict], theirs: Callable[[], dict]) -> tuple[list[dict], list[dict]]:
    """`rounds` runs of each, interleaved (ABBA...), so that the machine's load weighs on both alike."""
    mine, others = [], []
    for index in range(rounds):
        order = (ours, theirs) if index % 2 == 0 else (theirs, ours)
        for run in order:
            (mine if run is ours else others).append(run())
    return mine, others


def median_run(runs: list[dict]) -> dict:
    """The run of median seconds, marked with how many runs it stands for."""
    chosen = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    return {**chosen, "name": chosen["name"] + (f" (median of {len(runs)})" if len(runs) > 1 else "")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-daemon", action="store_true", help="leave out the (slow) Docker API path")
    parser.add_argument("--skip-big", action="store_true", help="leave out the 4 GiB memory run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the .tar.gz pair (default 3)")
    args = parser.parse_args()

    plain, gz = build_archive()
    size_gib = plain.stat().st_size / 2**30
    log(f"archive: {size_gib:.2f} GiB tar, {gz.stat().st_size / 2**30:.2f} GiB tar.gz")
    push = [str(BIN / "python"), str(REPO / "tools" / "pps_push.py"), "--insecure", "--quiet", "--phases"]
    target = "bench/datarobot-portable-prediction-api"
    runs = []

    def fresh(name: str, argv_for: "Callable[[str], list[str]]", shell: bool = False) -> dict:
        with FreshRegistry(name.split(",")[0].replace(" ", "-").replace("+", "")) as registry:
            return timed(name, argv_for(registry.address), shell=shell, registry=registry)

    unpacked = shlex.quote(str(CACHE / "gunzipped.tar"))
    ours_runs, skopeo_runs = paired(
        args.rounds,
        lambda: fresh("pps_image direct, .tar.gz", lambda r: push + ["--cache", "", str(gz), f"{r}/{target}", "1"]),
        lambda: fresh("gunzip + skopeo copy, .tar.gz", lambda r: [
            f"gunzip -c {shlex.quote(str(gz))} > {unpacked} && skopeo copy --dest-tls-verify=false "
            f"docker-archive:{unpacked} docker://{r}/{target}:1; rc=$?; rm -f {unpacked}; exit $rc"], shell=True))
    ratios = [mine["seconds"] / other["seconds"] for mine, other in zip(ours_runs, skopeo_runs)]
    runs += [median_run(ours_runs), median_run(skopeo_runs)]
    runs.append(fresh("pps_image direct, .tar", lambda r: push + ["--cache", "", str(plain), f"{r}/{target}", "1"]))
    runs.append(fresh("skopeo copy, .tar", lambda r: ["skopeo", "copy", "--dest-tls-verify=false",
                                                      f"docker-archive:{plain}", f"docker://{r}/{target}:1"]))
    checks = run_checks(push, gz, target)
    runs += checks
    crane_binary = crane()
    if crane_binary:
        runs.append(fresh("crane push, .tar", lambda r: [str(crane_binary), "push", "--insecure", str(plain),
                                                         f"{r}/{target}:1"]))
    if not args.skip_daemon:
        runs.append(daemon_run(gz, target))
    big = None
    if not args.skip_big:
        big_gz = build_big_archive()
        big = fresh("pps_image direct, 4 GiB .tar.gz (generated)",
                    lambda r: push + ["--cache", "", str(big_gz), f"{r}/bench/big", "1"])
    report(runs, ratios, size_gib, gz, big)
    return 0


def run_checks(push: list[str], gz: Path, target: str) -> list[dict]:
    """pps_image's no-op re-run and check mode (a tag to change; an unchanged tag) on one registry."""
    out = []
    with FreshRegistry("noop") as registry:
        noop_cache = str(CACHE / "noop-cache.json")
        Path(noop_cache).unlink(missing_ok=True)
        argv = push + ["--cache", noop_cache, str(gz), f"{registry.address}/{target}", "1"]
        timed("(pps_image first push, for the no-op and check runs)", argv, registry=registry)
        out.append(timed("pps_image no-op re-run, .tar.gz", argv, registry=registry))
        out.append(timed("pps_image check mode, unchanged tag, .tar.gz", argv + ["--check"], registry=registry))
        other_tag = push + ["--cache", "", "--check", str(gz), f"{registry.address}/{target}-other", "1"]
        out.append(timed("pps_image check mode, tag to push, no cache, .tar.gz", other_tag, registry=registry))
    return out


def daemon_run(gz: Path, target: str) -> dict:
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
        return timed("docker SDK via podman API (load, tag, push), .tar.gz", [str(BIN / "python"), "-c", code],
                     registry=registry)


def report(runs: list[dict], ratios: list[float], size_gib: float, gz: Path, big: dict | None) -> None:
    by_name = {run["name"].split(" (median")[0]: run for run in runs}
    skopeo_gz = by_name["gunzip + skopeo copy, .tar.gz"]["seconds"]
    skopeo_tar = by_name["skopeo copy, .tar"]["seconds"]
    print(f"\nPPS push benchmark: {size_gib:.2f} GiB image ({gz.stat().st_size / 2**30:.2f} GiB .tar.gz), "
          f"{os.cpu_count()} cores, a fresh HTTP docker-registry on loopback for each push, load average "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print(f"{'tool':62} {'seconds':>8} {'vs skopeo':>10} {'peak RSS':>9} {'CPU s':>6} {'registry CPU s':>14}")
    for run in runs:
        baseline = skopeo_gz if ".tar.gz" in run["name"] else skopeo_tar
        versus = f"{run['seconds'] / baseline:9.2f}x" if "check" not in run["name"] and "no-op" not in run["name"] \
            else " " * 10
        registry = f"{run['registry_cpu']:14.1f}" if run.get("registry_cpu") is not None else ""
        print(f"{run['name']:62} {run['seconds']:8.1f} {versus} {run['rss_mib']:6.0f} MiB {run['cpu']:6.1f} "
              f"{registry}")
    ours_gz, ours_tar = by_name["pps_image direct, .tar.gz"], by_name["pps_image direct, .tar"]
    print_phases(ours_gz)
    if big:
        print_phases(big)
    print("\ntargets (printed, not enforced):")
    print(f"  .tar.gz: pps_image / (gunzip + skopeo) = {statistics.median(ratios):.2f} median of "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (paired rounds)  (target <= 0.30)")
    print(f"  .tar:    pps_image / skopeo            = {ours_tar['seconds'] / skopeo_tar:.2f}  (target <= 0.60)")
    daemon = by_name.get("docker SDK via podman API (load, tag, push), .tar.gz")
    if daemon:
        print(f"  daemon path / pps_image (.tar.gz)     = {daemon['seconds'] / ours_gz['seconds']:.1f}x "
              "(target >= 5x)")
    print(f"  pps_image peak RSS, 1.2 GiB image     = {max(ours_gz['rss_mib'], ours_tar['rss_mib']):.0f} MiB "
          "(target <= 256 MiB)")
    if big:
        print(f"  pps_image peak RSS, 4 GiB .tar.gz     = {big['rss_mib']:.0f} MiB in {big['seconds']:.0f}s "
              "(target <= 256 MiB)")
    print(f"  no-op re-run                          = {by_name['pps_image no-op re-run, .tar.gz']['seconds']:.2f}s "
          "(process start included)")
    check = by_name["pps_image check mode, unchanged tag, .tar.gz"]
    print(f"  check mode, unchanged tag             = {check['seconds']:.2f}s (the no-op's cost)")
    other = by_name["pps_image check mode, tag to push, no cache, .tar.gz"]
    print(f"  check mode, tag to push, no cache     = {other['seconds']:.1f}s, compressed "
          f"{other.get('bytes_compressed', 0)} bytes: {other['stdout'].splitlines()[0] if other['stdout'] else ''}")


if __name__ == "__main__":
    sys.exit(main())
