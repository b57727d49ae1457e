"""`make bench-fleet BENCH_FLEET_ARGS=--floor`: what the bare transfer of an image's layers to N registries costs here.

The same compressed bytes a fleet push sends (blobs of the pushed layers' sizes, random so that nothing is shared)
go from files in memory to N fresh registries at once, a thread each, through this collection's registry client
(8 MiB PATCHes from mapped chunks, as a fleet push's followers send them): no archive read, no compression, no
Ansible. What N registries cost over one here, the registries' CPU and the sender's, every push to N registries pays
on these cores, however it compresses: on the rig the registries share the pushing machine's cores, where a real
fleet's registries cost the controller nothing.
"""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from bench_pps import REPO, FreshRegistry, process_cpu

sys.path.insert(0, str(REPO / ".collections"))
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_spool import (  # noqa: E402
    next_chunk,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (  # noqa: E402
    RegistryClient,
)

REPOSITORY = "bench/transfer-floor"


def blobs(directory: Path, sizes: list[int]) -> list[tuple[Path, str]]:
    """One new file of random bytes per size in `directory`, and its digest (hashed as it is written)."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for index, size in enumerate(sizes):
        path, digest = directory / f"blob-{index}", hashlib.sha256()
        with open(path, "wb") as handle:
            for start in range(0, size, 1 << 20):
                piece = os.urandom(min(1 << 20, size - start))
                digest.update(piece)
                handle.write(piece)
        made.append((path, "sha256:" + digest.hexdigest()))
    return made


def _send_all(address: str, files: list[tuple[Path, str]]) -> None:
    client = RegistryClient(address, insecure=True)
    for path, digest in files:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size

            def chunks():
                while handle.tell() < size:
                    yield next_chunk(handle)

            client.commit(client.send(REPOSITORY, chunks()), digest)


def transfer(files: list[tuple[Path, str]], count: int, binary: Path | None, storage: Path | None) -> dict:
    """The blobs sent to `count` fresh registries at once: wall seconds, the registries' and the sender's CPU s."""
    with ExitStack() as stack:
        registries = [stack.enter_context(FreshRegistry(f"floor-{index}", binary, storage)) for index in range(count)]
        before = [process_cpu(registry.process.process.pid) for registry in registries]
        own = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=count) as pool:
            for future in [pool.submit(_send_all, registry.address, files) for registry in registries]:
                future.result()  # a failed transfer fails the bench, rather than look cheap
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        received = sum(process_cpu(registry.process.process.pid) - cpu for registry, cpu in zip(registries, before))
    sent = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)
    return {"count": count, "seconds": seconds, "registries_cpu": received, "sender_cpu": sent}
