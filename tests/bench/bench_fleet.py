"""`make bench-fleet`: a fleet push (one registry per cluster) with 1, 2 and 4 registries, side by side.

Pushes `make bench`'s archive (built once and cached; the .tar.gz, like the vendor's) with playbooks/pps_image.yml
to N fresh HTTP docker-registry processes on loopback, one per localhost-aliased cluster, with N forks, and prints
the wall time of each run, its ratio to the one-registry run, and whether every registry got the same manifest
digest. By default the role's fleet mode pushes: one module run on the first cluster pushes for all of them.
`--per-host` adds the same runs with a module run per cluster, sharing the spool (mlops_pps_image_fleet: false), and
`--without-spool` with a module run per cluster and the spool off (each compresses the archive itself), for
comparison. `--repeat N` runs every case N times, interleaved (1, 2, 4 registries, each mode, then again), so that
other load on a shared machine falls on every case alike, and prints each case's median; the load average before and
after is printed too. With more than one mode, the one-registry runs of all modes (the same run: one host has no
fleet and writes no spool) are pooled, and every ratio is to their median. Nothing passes or fails on timings; the
target is printed beside the figures.

The registries run on the pushing machine's own cores, where a real fleet's registries cost the controller nothing.
By default they are the distribution registry built with this machine's Go (`bench_pps.built_registry`), whose
sha256 uses the CPU's SHA instructions; `--registry debian` runs Debian's docker-registry (Go 1.19, about twice the
CPU per byte received) instead. They store what they receive in memory (/dev/shm) by default, as a real fleet's
registries write to disks of their own. On the pushing machine's disk (`--registry-storage disk`) each costs about
0.1 CPU s more, and the kernel writes their 2 GB back while later runs go on. "machine CPU s" is every core's busy
time over the run (/proc/stat), kernel threads included.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pps import (  # noqa: E402
    BIN,
    CACHE,
    process_cpu,
    DISTRIBUTION_VERSION,
    REPO,
    FreshRegistry,
    build_archive,
    built_registry,
    log,
)
from loopback_links import LoopbackLinks  # noqa: E402
from transfer_floor import blobs, transfer  # noqa: E402

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)
REPOSITORY = "bench/datarobot-portable-prediction-api"
# The registries' storage by default: memory (tmpfs), as a real fleet's registries write to disks of their own.
MEMORY_STORAGE = Path("/dev/shm/datarobot-mlops-bench")


def go_version() -> str:
    return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout.strip()


def inventory(path: Path, addresses: list[str]) -> Path:
    hosts = {f"cluster-{index}": {
        "ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python"),
        "_mlops": {"registry": {"host": address, "insecure": True, "repositories": {"pps": REPOSITORY}}}}
        for index, address in enumerate(addresses)}
    path.write_text(json.dumps({"clusters": {"hosts": hosts}}))
    return path


def manifest(address: str) -> tuple[str, str]:
    """The pushed tag's manifest digest (as the registry names it) and body."""
    answer = requests.get(f"http://{address}/v2/{REPOSITORY}/manifests/1", headers={"Accept": MANIFEST_TYPES},
                          timeout=30)
    return answer.headers.get("Docker-Content-Digest", f"(HTTP {answer.status_code})"), answer.text


def members(blob: bytes) -> list[tuple[int, bytes]]:
    """The gzip members of a blob: (compressed length, uncompressed bytes) each."""
    found, rest = [], blob
    while rest:
        inflater = zlib.decompressobj(31)
        data = inflater.decompress(rest)
        found.append((len(rest) - len(inflater.unused_data), data))
        rest = inflater.unused_data
    return found


def compare_layers(addresses: list[str], manifests: list[dict]) -> str:
    """Where two registries' blobs of one layer part: the first gzip member that differs, and how."""
    lines = []
    for index, layers in enumerate(zip(*(manifest["layers"] for manifest in manifests))):
        digests = [layer["digest"] for layer in layers]
        if len(set(digests)) == 1:
            continue
        first, other = digests[0], next(digest for digest in digests if digest != digests[0])
        blobs = [requests.get(f"http://{addresses[digests.index(digest)]}/v2/{REPOSITORY}/blobs/{digest}",
                              timeout=120).content for digest in (first, other)]
        one, two = members(blobs[0]), members(blobs[1])
        lines.append(f"layer {index}: {len(one)} / {len(two)} gzip members, same content: "
                     f"{b''.join(d for _n, d in one) == b''.join(d for _n, d in two)}")
        starts = [0, 0]
        for number, (left, right) in enumerate(zip(one, two)):
            packed = [blobs[0][starts[0]:starts[0] + left[0]], blobs[1][starts[1]:starts[1] + right[0]]]
            if left != right or packed[0] != packed[1]:
                where = next((at for at, (x, y) in enumerate(zip(*packed)) if x != y), None)
                lines.append(f"  member {number}: compressed {left[0]} / {right[0]} bytes, uncompressed "
                             f"{len(left[1])} / {len(right[1])}, same uncompressed bytes: {left[1] == right[1]}, "
                             f"first differing compressed byte at {where} of the member")
                if len(lines) > 12:
                    break
            starts = [starts[0] + left[0], starts[1] + right[0]]
        if os.environ.get("BENCH_FLEET_KEEP"):  # both blobs, for a closer look
            for name, blob in zip(("first", "other"), blobs):
                Path(os.environ["BENCH_FLEET_KEEP"], f"layer{index}-{name}.gz").write_bytes(blob)
    return "\n".join(lines) or "no layer differs"


def adopt_orphans() -> None:
    """Become the subreaper of what the runs start: the pushes' background workers detach from Ansible (double fork),
    and only a process that reaps them counts their CPU seconds."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def machine_busy() -> float:
    """CPU seconds every core of the machine has been busy since boot (/proc/stat): unlike a process's own figures,
    it holds the kernel's threads too, such as those writing dirty pages back to disk."""
    fields = [int(field) for field in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def reap_orphans(seconds: float = 10.0) -> None:
    """Wait for the adopted workers (a worker writes its result, then exits), so that RUSAGE_CHILDREN holds their CPU
    seconds; a worker still running after `seconds` is left uncounted."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no child left
        if pid == 0:
            time.sleep(0.05)


def fleet_run(archive: Path, size: int, spool: bool, extra: dict | None = None, binary: Path | None = None,
              link_rate: float = 0.0, storage: Path | None = None, one_run: bool = True) -> dict:
    """One playbook run pushing `archive` to `size` fresh registries with `size` forks; seconds and digests.

    CPU seconds are those of every process the run started (ansible, the modules, the pushes' background workers,
    the registries), counted once they have all ended: on a shared machine they say more about the cost than the wall time does.
    """
    spool = bool((extra or {}).get("mlops_pps_image_spool", spool))  # --extra-vars may set it too
    one_run = bool((extra or {}).get("mlops_pps_image_fleet", one_run))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        registries = [stack.enter_context(FreshRegistry(f"fleet-{index}", binary, storage)) for index in range(size)]
        if link_rate:
            stack.enter_context(LoopbackLinks([registry.port for registry in registries], link_rate))
        registry_cpu = [process_cpu(registry.process.process.pid) for registry in registries]
        addresses = [registry.address for registry in registries]
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORKS": str(size),
               "XDG_CACHE_HOME": str(Path(scratch) / "cache"), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        argv = [str(BIN / "ansible-playbook"), "-i", str(inventory(Path(scratch) / "fleet.yml", addresses)),
                str(REPO / "playbooks" / "pps_image.yml"), "-e",
                json.dumps({"mlops_pps_image_archive": str(archive), "mlops_pps_image_version": "1",
                            "mlops_pps_image_spool": spool, "mlops_pps_image_fleet": one_run, **(extra or {})})]
        started, busy = time.monotonic(), machine_busy()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False)
        seconds, busy = time.monotonic() - started, machine_busy() - busy
        registry_cpu = sum(process_cpu(registry.process.process.pid) - before_cpu
                           for registry, before_cpu in zip(registries, registry_cpu))
        if proc.returncode:
            raise RuntimeError(f"the fleet push failed:\n{proc.stdout[-3000:]}")
        manifests = [manifest(address) for address in addresses]
        digests = {digest for digest, _body in manifests}
        bodies = [body for _digest, body in manifests]
        pushed_layers = json.loads(bodies[0]).get("layers", [])
        layers = [layer["digest"][7:19] for layer in pushed_layers]
        layer_sizes = [layer["size"] for layer in pushed_layers]
        if len(digests) > 1:  # what differs: the layers' digests, or only their sizes (the manifests, in full)
            log(f"different manifests: {sorted(digests)}\n" + "\n".join(bodies) + f"\n{proc.stdout[-4000:]}")
            log(compare_layers(addresses, [json.loads(body) for body in bodies]))
        left = [path.name for path in (Path(scratch) / "cache" / "datarobot_mlops" / "spool").glob("*")
                if path.name != ".lock"]
    reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # with one host there is no fleet, and the role writes no spool (nobody could follow it)
    mode = "one run" if one_run else f"forks, spool {'on' if spool else 'off'}"
    name = f"{size} registr{'y' if size == 1 else 'ies'}, {mode}{' (alike)' if size == 1 else ''}"
    log(f"{name}: {seconds:.1f}s, {cpu:.1f} CPU s, {len(digests)} distinct manifest digest(s), "
        f"spool left: {left or 'none'}")
    return {"name": name, "size": size, "mode": mode, "seconds": seconds, "cpu": cpu, "digests": digests,
            "registry_cpu": registry_cpu, "machine_cpu": busy,
            "layers": layers, "layer_sizes": layer_sizes,
            "left": left}


def median_run(runs: list[dict]) -> dict:
    """One case's runs as one row: median seconds and CPU, whether every run left one digest in all its registries
    (the fleet's promise), how many digests the runs left between them, and leftovers of all of them."""
    return {**runs[0], "seconds": statistics.median(run["seconds"] for run in runs),
            "cpu": statistics.median(run["cpu"] for run in runs),
            "registry_cpu": statistics.median(run["registry_cpu"] for run in runs),
            "machine_cpu": statistics.median(run["machine_cpu"] for run in runs),
            "all_seconds": [round(run["seconds"], 1) for run in runs],
            "same": all(len(run["digests"]) == 1 for run in runs),
            "across": len(set().union(*(run["digests"] for run in runs))),
            "left": [name for run in runs for name in run["left"]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,2,4", help="registries per run, comma-separated (default 1,2,4)")
    parser.add_argument("--per-host", action="store_true",
                        help="also run each size with a module run per host sharing the spool (mlops_pps_image_fleet: "
                             "false), the design before one run pushed for the fleet")
    parser.add_argument("--without-spool", action="store_true",
                        help="also run each size with a module run per host and the spool off")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every case, interleaved; medians printed")
    parser.add_argument("--extra-vars", type=json.loads, default={}, help="JSON of more variables for every run")
    parser.add_argument("--link-rate", type=float, default=0.0,
                        help="MB/s: give each registry a link of its own at this rate (tc on loopback; needs root)")
    parser.add_argument("--registry", choices=("built", "debian"), default="built",
                        help="the distribution registry built with this machine's Go (default), or Debian's")
    parser.add_argument("--registry-storage", choices=("memory", "disk"), default="memory",
                        help="where the registries keep what they receive: /dev/shm (default) or the bench cache on disk")
    parser.add_argument("--floor", action="store_true",
                        help="also time the bare transfer of the pushed layers to 1 and to the most registries (no "
                             "archive, no compression, no Ansible: tests/bench/transfer_floor.py), and print what it "
                             "leaves of the target on these cores")
    args = parser.parse_args()
    adopt_orphans()
    _plain, archive = build_archive()
    binary = built_registry() if args.registry == "built" else None
    sizes = [int(size) for size in args.sizes.split(",")]
    modes = [(True, True)] + [(True, False)] * args.per_host + [(False, False)] * args.without_spool  # spool, one run
    load_before = os.getloadavg()
    storage = MEMORY_STORAGE if args.registry_storage == "memory" else None
    every = [fleet_run(archive, size, spool, args.extra_vars, binary, args.link_rate, storage, one_run)
             for _round in range(args.repeat) for size in sizes for spool, one_run in modes]
    load_after = os.getloadavg()
    names = list(dict.fromkeys(run["mode"] for run in every))
    runs = [median_run([run for run in every if run["size"] == size and run["mode"] == mode])
            for mode in names for size in sizes]
    # One registry is the same run in every mode (no fleet, no spool): the ratios take the median of all of them.
    ones = [run for run in every if run["size"] == 1]
    pooled = {**median_run(ones), "name": f"1 registry, all {len(ones)} runs", "mode": "pooled"} \
        if len(names) > 1 and ones else None
    registry = f"distribution {DISTRIBUTION_VERSION} built with {go_version()}" if binary else "Debian docker-registry"
    print(f"\nFleet push benchmark: {archive.stat().st_size / 2**30:.2f} GiB .tar.gz, {os.cpu_count()} cores, "
          f"fresh HTTP registry processes on loopback ({registry}, storing on {args.registry_storage}), "
          f"{f'each behind a link of its own at {args.link_rate:g} MB/s' if args.link_rate else 'unlimited loopback'}, "
          "one fork per cluster; "
          f"{args.repeat} run(s) per case, interleaved, medians; load average before "
          f"{' '.join(f'{load:.2f}' for load in load_before)}, after {' '.join(f'{load:.2f}' for load in load_after)}\n")
    print(f"{'run':36} {'seconds':>8} {'vs 1':>6} {'CPU s':>7} {'vs 1':>6} {'registries CPU s':>17} "
          f"{'the rest CPU s':>15} {'vs 1':>6} {'machine CPU s':>14} {'one digest a run':>17} "
          f"{'digests, all runs':>18} {'spool left':>11}")
    for run in ([pooled] if pooled else []) + runs:
        one = pooled or next((r for r in runs if r["size"] == 1 and r["mode"] == run["mode"]), None)
        ratio = f"{run['seconds'] / one['seconds']:5.2f}x" if one else "     -"
        cpu_ratio = f"{run['cpu'] / one['cpu']:5.2f}x" if one else "     -"
        rest = run["cpu"] - run["registry_cpu"]
        rest_ratio = f"{rest / (one['cpu'] - one['registry_cpu']):5.2f}x" if one else "     -"
        print(f"{run['name']:36} {run['seconds']:8.1f} {ratio:>6} {run['cpu']:7.1f} {cpu_ratio:>6} "
              f"{run['registry_cpu']:17.1f} {rest:15.1f} {rest_ratio:>6} {run['machine_cpu']:14.1f} "
              f"{str(run['same']):>17} {run['across']:>18} {str(bool(run['left'])):>11}  runs: {run['all_seconds']}")
    for run in runs:
        if run["across"] > 1:  # which layers came out otherwise from one run to the next
            print(f"  {run['name']}: layer digests (first 12 hex) per run:")
            for each in every:
                if each["size"] == run["size"] and each["mode"] == run["mode"]:
                    print(f"    {each['layers']}")
    four, one = (next((r for r in runs if r["size"] == n and r["mode"] == names[0]), None) for n in (4, 1))
    one = pooled or one
    if four and one:
        print(f"\ntarget (printed, not enforced): 4 registries / 1 registry = {four['seconds'] / one['seconds']:.2f} "
              f"wall, {four['cpu'] / one['cpu']:.2f} CPU  (target <= 1.5)")
    if args.floor and one:
        print_floor(every[0]["layer_sizes"], [1, max(sizes)], args.repeat, binary, storage, one)
    return 0


def print_floor(layer_sizes: list[int], counts: list[int], repeat: int, binary: Path | None, storage: Path | None,
                one: dict) -> None:
    """The bare transfer's figures (medians of `repeat` interleaved rounds), and the run time it implies at best for
    the most registries: the one-registry run plus the transfer's extra CPU spread over every core."""
    directory = (storage or CACHE) / "floor-blobs"
    try:
        files = blobs(directory, layer_sizes)
        every = [transfer(files, count, binary, storage) for _round in range(repeat) for count in counts]
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)
    rows = {count: {key: statistics.median(run[key] for run in every if run["count"] == count)
                    for key in ("seconds", "registries_cpu", "sender_cpu")} for count in counts}
    print(f"\nBare transfer of the pushed layers ({sum(layer_sizes) / 1e9:.2f} GB in {len(layer_sizes)} blobs) from "
          "memory, this collection's registry client, a thread per registry; no archive, no compression, no Ansible; "
          f"{repeat} run(s) each, medians:")
    print(f"{'registries':>10} {'seconds':>8} {'registries CPU s':>17} {'sender CPU s':>13}")
    for count, row in rows.items():
        print(f"{count:>10} {row['seconds']:8.2f} {row['registries_cpu']:17.2f} {row['sender_cpu']:13.2f}")
    most, cores = counts[-1], os.cpu_count() or 1
    extra = sum(rows[most][key] - rows[1][key] for key in ("registries_cpu", "sender_cpu"))
    best = one["seconds"] + extra / cores
    print(f"{most} registries take {extra:.1f} CPU s more than one to receive and send the same bytes. On {cores} "
          f"cores, with the registries on them, a run pushing to {most} registries that keeps every core busy while "
          f"it pushes takes at best the one-registry run plus that: {one['seconds']:.1f} + {extra:.1f} / {cores} = "
          f"{best:.1f} s, {best / one['seconds']:.2f}x, however it compresses.")


if __name__ == "__main__":
    sys.exit(main())
