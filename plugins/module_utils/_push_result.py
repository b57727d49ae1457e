# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What a push found and did: the tag's state before, the manifest it puts, and the result it reports.

Shared by the daemonless push (_image_push) and the daemon path (_daemon_push); no transfer logic here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST_V2,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ArchiveError,
    Image,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository


class StoredBlob(NamedTuple):
    """A blob the manifest can name: stored (or mounted, or known from the cache in check mode) under `digest`."""

    digest: str
    size: int


class Manifest(NamedTuple):
    """The manifest as put under every tag."""

    body: bytes
    media_type: str
    digest: str


@dataclass
class PushResult:
    image: str
    digest: str
    config_digest: str
    changed: bool
    before: str | None
    blobs_uploaded: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_uploaded: int = 0
    would_upload: list[str] = field(default_factory=list)
    would_upload_bytes: int = 0  # check mode: bytes of what would be sent, layers counted before compression
    bytes_compressed: int = 0  # layer bytes that went through the compressor
    elapsed: float = 0.0
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    message: str = ""  # check mode: what would be sent, for people
    blobs_from_spool: int = 0  # layers another push of the same archive compressed (the spool)
    archive_bytes_read: int = 0  # bytes this push read from the archive file (0: it followed the spooled index)


def would_push(layers: int, count: int, compressing: bool) -> str:
    """Check mode's line for people: how many layers would be sent and about how many bytes."""
    if not layers:
        return "would push no layers (the registry has them all)" + (f", {about(count)} of config" if count else "")
    size = f"about {about(count)}" + (" before compression" if compressing else "")
    return f"would push {layers} layer{'' if layers == 1 else 's'}, {size}"


def about(count: int) -> str:
    """A byte count for people, decimal units: 1.2 GB, 340 MB, 12 kB."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.1f} {unit}" if count < 10 * size else f"{count / size:.0f} {unit}"
    return f"{count} bytes"


class TagState(NamedTuple):
    """What a tag points at now: both None when the tag does not exist."""

    digest: str | None
    config_digest: str | None


def tag_state(client: Any, repository: Repository, tag: str) -> TagState:
    """The manifest and config digests the tag points at now."""
    found = client.manifest(repository.path, tag)
    if found is None:
        return TagState(None, None)
    digest, body = found[0], found[2]
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    # a body that is JSON but no manifest object names no config, like one that is no JSON (no AttributeError)
    section = document.get("config") if isinstance(document, dict) else None
    config = section.get("digest") if isinstance(section, dict) else None
    return TagState(digest or "sha256:" + hashlib.sha256(body).hexdigest(), config)


def already_pushed(client: Any, repository: Repository, tags: list[str], before: str | None,
                   live_config: str | None, config_digest: str, blobs: int) -> PushResult | None:
    """The no-op result when every tag already points at the image with this config, else None."""
    if not before or live_config != config_digest:
        return None
    if not all((found := client.manifest(repository.path, tag)) is not None and found[0] == before
               for tag in tags[1:]):
        return None
    return PushResult(f"{repository}:{tags[0]}", before, config_digest, False, before, blobs_skipped=blobs)


def build_manifest(image: Image, outcome: dict[str, StoredBlob], compression_kind: str,
                   manifest_format: str) -> Manifest:
    """The manifest naming `outcome`'s blobs (by diff_id); Docker v2 when every layer is gzip (or asked), else OCI."""
    layers = []
    all_gzip = True
    for layer in image.layers:
        digest, size = outcome[layer.diff_id]
        if layer.compressed:
            media_type = layer.media_type or OCI_LAYER_GZIP
        else:
            media_type = OCI_LAYER if compression_kind == "none" else OCI_LAYER_GZIP
        all_gzip &= media_type.endswith("gzip")
        layers.append({"mediaType": media_type, "digest": digest, "size": size})
    docker = manifest_format == "docker" or (manifest_format == "auto" and all_gzip)
    if docker:
        if not all_gzip:
            raise ArchiveError("manifest_format docker needs gzip layers: use compression: gzip or "
                               "manifest_format: oci.")
        for entry in layers:
            entry["mediaType"] = DOCKER_LAYER_GZIP
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_V2 if docker else OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": image.config_digest,
                   "size": len(image.config)},
        "layers": layers,
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return Manifest(body, manifest["mediaType"], "sha256:" + hashlib.sha256(body).hexdigest())
