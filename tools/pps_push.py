"""Push a PPS image archive by hand, with progress: the pps_image module's library on the command line.

    python tools/pps_push.py datarobot-portable-prediction-api-9.2.0.tar.gz \\
        registry.example.com/datarobot/datarobot-portable-prediction-api 9.2.0 --username me

The password is read from $REGISTRY_PASSWORD or asked for; it is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import threading
import time
from pathlib import Path


def _import_path() -> None:
    """Make `ansible_collections.datarobot_mlops.management_agent` importable, installed or from a checkout."""
    here = Path(__file__).resolve().parent
    for parent in here.parents:
        if parent.name == "ansible_collections":
            sys.path.insert(0, str(parent.parent))
            return
    sys.path.insert(0, str(here.parent / ".collections"))


_import_path()

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError  # noqa: E402
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._blob_compression import (  # noqa: E402
    Compression,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_push import (  # noqa: E402
    DirectPusher,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_cache import (  # noqa: E402
    PushCache,
    default_cache_path,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (  # noqa: E402
    Repository,
    validate_tag,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import (  # noqa: E402
    Credentials,
    credentials_from_docker_config,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (  # noqa: E402
    RegistryClient,
)


class Progress:
    """One status line on stderr: bytes sent and rate."""

    def __init__(self) -> None:
        self.sent = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._lock:
            self.sent += count
            elapsed = max(time.monotonic() - self.started, 1e-6)
            sys.stderr.write(f"\r  sent {self.sent / 2**20:9.1f} MiB  {self.sent / 2**20 / elapsed:7.1f} MiB/s")
            sys.stderr.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="image archive (.tar or .tar.gz)")
    parser.add_argument("name", help="target repository, host[:port]/path")
    parser.add_argument("tag", help="tag, normally the PPS version (not 'latest')")
    parser.add_argument("--additional-tag", action="append", default=[])
    parser.add_argument("--source-image")
    parser.add_argument("--username")
    parser.add_argument("--ca-path")
    parser.add_argument("--no-verify", action="store_true", help="do not verify the registry's certificate")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP registry")
    parser.add_argument("--compression", choices=["gzip", "none"], default="gzip")
    parser.add_argument("--workers", type=int, help="compression threads (default: CPUs, at most 8)")
    parser.add_argument("--check", action="store_true", help="only report what would be uploaded")
    parser.add_argument("--cache", default=default_cache_path(),
                        help="file remembering earlier pushes (default %(default)s); '' disables it")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--phases", action="store_true",
                        help="print where the time went (CPU and wall seconds, bytes per phase) as JSON on stderr")
    args = parser.parse_args()
    try:
        repository = Repository.parse(args.name)
        tags = [validate_tag(t) for t in [args.tag, *args.additional_tag]]
        if args.username:
            password = os.environ.get("REGISTRY_PASSWORD") or getpass.getpass(f"Password for {args.username}: ")
            credentials: Credentials | None = Credentials(args.username, password)
        else:
            credentials = credentials_from_docker_config(repository.registry)
        client = RegistryClient(repository.registry, credentials, ca_path=args.ca_path,
                                validate_certs=not args.no_verify, insecure=args.insecure)
        client.check_access(repository.path)
        pusher = DirectPusher(client, repository, tags, compression=Compression(args.compression),
                              workers=args.workers, cache=PushCache(args.cache or None), check_mode=args.check,
                              on_progress=None if args.quiet else Progress())
        result = pusher.push(args.src, args.source_image)
    except (MlopsError, OSError) as exc:  # every error of ours says what to fix; a traceback would not
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        sys.stderr.write("\n")
    if args.phases:
        print(json.dumps({"phases": result.phases, "bytes_compressed": result.bytes_compressed}), file=sys.stderr)
    if result.message:
        print(result.message)
    for warning in pusher.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    state = "would push" if args.check else ("pushed" if result.changed else "already there")
    print(f"{result.image}: {state} {result.digest} (config {result.config_digest}); blobs uploaded "
          f"{result.blobs_uploaded}, skipped {result.blobs_skipped}, {result.bytes_uploaded} bytes in "
          f"{result.elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
