# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Read image archives (docker save, podman save, skopeo) without unpacking them.

One sequential scan records where every member's bytes are and keeps the small
JSON members (manifests, configs, index); layers are never held in memory. The
scan also refuses archives that could not have come from an image tool:
absolute or `..` member names, links leading outside the archive, devices,
duplicate names, and hostile ones: more members than any image has, more
metadata than any image has, a gzip stream that claims to inflate beyond what
real layers compress to (a decompression bomb), JSON nested deeper than any
manifest. Plain `.tar` archives are then read at offsets (in parallel);
gzip-compressed ones only as a stream, in archive order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import posixpath
import re
import tarfile
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._tar_safety import (
    ABSOLUTE,
    PARENT,
    is_special,
    member_parts,
    name_problem,
    resolve_inside,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._archive_io import Counted, Prefixed
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_stats import Phases, TimedReader
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._tar_stream import TarStream

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SMALL_MEMBER = 4 * 1024 * 1024  # JSON documents and configs are far smaller; layers are read later
READ_SIZE = 2 * 1024 * 1024  # bytes per read of an archive member: the push's compression block, so no re-cutting
# Bounds on what an archive may make the scan do. An image has at most 127 layers of a few members each; its
# manifests and configs are kilobytes; image layers compress a few times, not a hundred times.
MAX_MEMBERS = 10_000
MAX_HELD_BYTES = 64 * 1024 * 1024  # all JSON documents kept in memory together
MAX_JSON_DEPTH = 64
MAX_GZIP_RATIO = 100  # tar bytes per gzip byte, checked once the tar stream passes BOMB_FLOOR
BOMB_FLOOR = 1024 * 1024 * 1024

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

try:
    from isal import igzip as _fast_gzip  # several times faster than zlib at reading .tar.gz
    from isal.igzip_lib import IsalError
    DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (zlib.error, IsalError)
except ImportError:  # pragma: no cover - isal is in requirements.txt; zlib is the fallback
    _fast_gzip = None
    DECOMPRESSION_ERRORS = (zlib.error,)


class ArchiveError(MlopsError, ValueError):
    """The archive cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data, in the uncompressed tar stream
    size: int
    head: bytes  # first bytes, to recognise compressed layers

    @property
    def compressed(self) -> bool:
        """A blob stored gzip- or zstd-compressed (OCI archives), to be uploaded as it is."""
        return self.head.startswith(GZIP_MAGIC) or self.head.startswith(ZSTD_MAGIC)


@dataclass
class Layer:
    """One layer as it sits in the archive; `digest` is known up front only for stored-compressed blobs."""

    member: Member
    diff_id: str  # sha256 of the uncompressed tar, from the image config
    compressed: bool  # stored gzip/zstd-compressed in the archive (OCI archives), uploaded as is
    media_type: str | None = None
    digest: str | None = None


@dataclass
class Image:
    config: bytes
    config_digest: str
    layers: list[Layer]
    names: list[str] = field(default_factory=list)


@dataclass
class Archive:
    path: str
    gzipped: bool
    members: dict[str, Member]
    documents: dict[str, bytes]  # small members' contents, by name
    order: list[str]  # member names in archive order
    held: int = 0  # bytes of `documents`
    on_read: Callable[[int], None] | None = None  # told the file bytes each read consumes (progress)
    phases: Phases | None = field(default=None, repr=False, compare=False)  # counts the time spent decompressing

    # --- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def scan(cls, path: str, on_large_member: Callable[[Member, IO[bytes]], None] | None = None,
             on_read: Callable[[int], None] | None = None, phases: Phases | None = None) -> "Archive":
        """Index the archive in one sequential read.

        `on_large_member` is handed each member too large to be a JSON document (in practice: the layers) with a
        reader over its bytes, as the scan passes it: a gzip archive can then be pushed in a single read.
        `on_read` is told how many bytes of the file each read consumes (progress).
        """
        if not os.path.isfile(path):
            raise ArchiveError(f"{path} does not exist or is not a file.")
        with open(path, "rb") as probe:
            magic = probe.read(512)
        if not magic:
            raise ArchiveError(f"{path} is empty (0 bytes): the download or copy did not finish. Copy the archive "
                               "again and compare its checksum.")
        gzipped = magic.startswith(GZIP_MAGIC)
        if not gzipped and not (len(magic) == 512 and magic[257:262] == b"ustar"):
            raise ArchiveError(f"{path} is neither a tar archive nor gzip-compressed (unknown format): give the "
                               "file `docker save`, `podman save` or `skopeo copy` wrote.")
        archive = cls(path, gzipped, {}, {}, [], on_read=on_read, phases=phases)
        limit = max(BOMB_FLOOR, MAX_GZIP_RATIO * os.path.getsize(path)) if gzipped else None
        try:
            # Plain tar: headers are read by seeking past the data. Gzip: one pass through the stream, member data
            # read straight from the decompressor (TarStream).
            with archive.open_stream() as stream, \
                    (TarStream(stream, READ_SIZE) if gzipped else tarfile.open(fileobj=stream, mode="r:")) as tar:
                links: dict[str, str] = {}
                for count, info in enumerate(tar, 1):
                    archive._check_bounds(count, info, limit)
                    archive._add(tar, info, links, on_large_member)
                archive._resolve_links(links)
        except (tarfile.TarError, EOFError, OSError, *DECOMPRESSION_ERRORS) as exc:
            what = "truncated or corrupt gzip data" if gzipped else "a truncated or corrupt tar archive"
            raise ArchiveError(f"{path}: {what} ({exc}). Copy the archive again and compare its checksum.") from exc
        if not archive.members:
            raise ArchiveError(f"{path} is an empty archive.")
        return archive

    @contextmanager
    def open_stream(self) -> Iterator[IO[bytes]]:
        """The archive's tar bytes from the start, decompressed when the file is gzip."""
        with self._open_file() as raw:
            if not self.gzipped:
                yield raw
                return
            with (_fast_gzip.IGzipFile if _fast_gzip is not None else gzip.GzipFile)(fileobj=raw, mode="rb") as unzipped:
                yield TimedReader(unzipped, self.phases, "decompress") if self.phases else unzipped

    def _open_file(self) -> IO[bytes]:
        handle = open(self.path, "rb")
        return Counted(handle, self._count) if self.on_read or self.phases else handle

    def _count(self, count: int) -> None:
        if self.phases is not None:
            self.phases.count_archive(count)
        if self.on_read is not None:
            self.on_read(count)

    def _check_bounds(self, count: int, info: tarfile.TarInfo, limit: int | None) -> None:
        """Refuse an archive before its next member when it is far beyond what an image tool writes."""
        if count > MAX_MEMBERS:
            raise ArchiveError(f"{self.path} has more than {MAX_MEMBERS} members, far more than an image archive "
                               "has: refusing it (a decompression bomb?). Give the file `docker save`, `podman save` "
                               "or `skopeo copy` wrote.")
        if limit is not None and info.offset_data + info.size > limit:
            raise ArchiveError(f"{self.path}: member {info.name!r} would inflate the gzip stream to more than "
                               f"{MAX_GZIP_RATIO} times the file's size, which image layers never do: refusing a "
                               "decompression bomb. If the archive is genuine, decompress it (gunzip) and give the "
                               ".tar instead.")

    def _add(self, tar: tarfile.TarFile | TarStream, info: tarfile.TarInfo, links: dict[str, str],
             on_large_member: Callable[[Member, IO[bytes]], None] | None) -> None:
        name = _clean_name(info.name)
        if name is None:
            return  # the archive root "./"
        if name in self.members or name in links:
            raise ArchiveError(f"{self.path}: member {name!r} appears twice; refusing an ambiguous archive.")
        if info.isdir():
            return
        if info.issym() or info.islnk():
            start = [] if info.islnk() else member_parts(posixpath.dirname(name))
            target = resolve_inside(start + member_parts(info.linkname), {})
            if info.linkname.startswith("/") or target is None:
                raise ArchiveError(f"{self.path}: link {name!r} points outside the archive ({info.linkname!r}).")
            links[name] = _clean_name("/".join(target)) or ""
            return
        if is_special(info):
            raise ArchiveError(f"{self.path}: member {name!r} is a device, FIFO or other special file.")
        reader = tar.extractfile(info)
        head = reader.read(4) if reader else b""
        member = Member(name, info.offset_data, info.size, head)
        if reader is not None and _can_be_document(name, info.size, head):
            self._hold(name, head + reader.read(), info.size)
        elif on_large_member is not None and reader is not None and (info.size > SMALL_MEMBER or _can_be_layer(name)):
            on_large_member(member, Prefixed(head, reader))
        self.members[name] = member
        self.order.append(name)

    def _hold(self, name: str, data: bytes, size: int) -> None:
        self.held += size
        if self.held > MAX_HELD_BYTES:
            raise ArchiveError(f"{self.path} holds more than {MAX_HELD_BYTES // 2**20} MiB of JSON documents, far "
                               "more than an image's manifests and configs: refusing it.")
        self.documents[name] = data

    def _resolve_links(self, links: dict[str, str]) -> None:
        for name, target in links.items():
            seen = {name}
            while target in links and target not in seen:
                seen.add(target)
                target = links[target]
            if target not in self.members:
                raise ArchiveError(f"{self.path}: link {name!r} points to {target!r}, which is not a file in the "
                                   "archive.")
            self.members[name] = self.members[target]

    # --- reading ---------------------------------------------------------------------------------------------

    def document(self, name: str, what: str) -> Any:
        if name not in self.members:
            raise ArchiveError(f"{self.path}: {what} {name!r} is missing from the archive.")
        data = self.documents.get(name)
        if data is None:
            raise ArchiveError(f"{self.path}: {what} {name!r} is not a JSON document (too large, or not JSON).")
        return self._json(data, what, name)

    def _json(self, data: bytes, what: str, name: str) -> Any:
        """The document parsed, once its nesting is known to be no deeper than a manifest's could be."""
        if json_depth(data) > MAX_JSON_DEPTH:
            raise ArchiveError(f"{self.path}: {what} {name!r} nests JSON more than {MAX_JSON_DEPTH} levels deep, "
                               "which no image tool writes: refusing it.")
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ArchiveError(f"{self.path}: {what} {name!r} is not valid JSON ({exc}).") from exc

    def open_member(self, member: Member) -> IO[bytes]:
        """A reader over one member's bytes; plain tar only (gzip archives are read with `stream`)."""
        if self.gzipped:
            raise ValueError("random access into a gzip-compressed archive")
        handle = self._open_file()
        handle.seek(member.offset)
        reader = _Slice(handle, member.size)
        return TimedReader(reader, self.phases, "read") if self.phases else reader

    def read_again(self, member: Member) -> Iterator[bytes]:
        """A member's bytes read afresh from the file (a gzip archive is decompressed up to it again)."""
        # The generator is read to its end or closed by its consumer; either way `finally` closes the stream.
        opened = ExitStack()
        try:
            raw = opened.enter_context(self.open_stream())
            _skip(raw, member.offset)
            reader = _Slice(raw, member.size, close_parent=False)
            yield from iter(lambda: reader.read(READ_SIZE), b"")
        finally:
            opened.close()

    def stream(self, wanted: set[str], on_member: Callable[[Member, IO[bytes]], None]) -> None:
        """Call `on_member` for each wanted member in archive order, with a reader over its bytes."""
        with self.open_stream() as raw:
            position = 0
            for name in self.order:
                member = self.members[name]
                if member.name not in wanted:
                    continue
                _skip(raw, member.offset - position)
                reader = _Slice(raw, member.size, close_parent=False)
                on_member(member, reader)
                _skip(reader, reader.remaining)
                position = member.offset + member.size

    # --- images ----------------------------------------------------------------------------------------------

    def images(self) -> list[Image]:
        if "manifest.json" in self.members:
            return self._docker_images()
        if "index.json" in self.members and "oci-layout" in self.members:
            return self._oci_images()
        raise ArchiveError(f"{self.path} has neither manifest.json (docker save) nor index.json and oci-layout "
                           "(OCI archive): unknown format.")

    def select(self, source_image: str | None) -> Image:
        images = self.images()
        if source_image is None:
            if len(images) > 1:
                names = ", ".join(n for image in images for n in image.names) or f"{len(images)} unnamed images"
                raise ArchiveError(f"{self.path} holds several images ({names}): set source_image to one of them.")
            return images[0]
        for image in images:
            if source_image in image.names or source_image in (image.config_digest, image.config_digest[7:19]):
                return image
        known = ", ".join(n for image in images for n in image.names) or "none named"
        raise ArchiveError(f"{self.path} has no image {source_image!r} (it has: {known}).")

    def _config(self, name: str, expected_digest: str | None) -> tuple[bytes, str, list[str]]:
        config = self.documents.get(name)
        if config is None:
            what = "is missing from the archive" if name not in self.members else "is not a JSON document"
            raise ArchiveError(f"{self.path}: image config {name!r} {what}.")
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        if expected_digest and digest != expected_digest:
            raise ArchiveError(f"{self.path}: image config {name!r} does not match its digest {expected_digest}.")
        parsed = self._json(config, "image config", name)
        rootfs = parsed.get("rootfs") if isinstance(parsed, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise ArchiveError(f"{self.path}: image config {name!r} has no rootfs.diff_ids list.")
        return config, digest, diff_ids

    def _docker_images(self) -> list[Image]:
        manifest = self.document("manifest.json", "manifest")
        if not isinstance(manifest, list) or not manifest:
            raise ArchiveError(f"{self.path}: manifest.json is not a list of images.")
        images = []
        for entry in manifest:
            config_name = entry.get("Config") if isinstance(entry, dict) else None
            layer_names = entry.get("Layers") if isinstance(entry, dict) else None
            if not isinstance(config_name, str) or not isinstance(layer_names, list) \
                    or not all(isinstance(n, str) for n in layer_names):
                raise ArchiveError(f"{self.path}: manifest.json has an entry without a Config name and a Layers "
                                   "list of names.")
            expected = _digest_from_blob_path(config_name)
            config, config_digest, diff_ids = self._config(_clean_name(config_name) or "", expected)
            if len(diff_ids) != len(layer_names):
                raise ArchiveError(f"{self.path}: manifest.json lists {len(layer_names)} layers but the config "
                                   f"has {len(diff_ids)} diff_ids.")
            layers = []
            for layer_name, diff_id in zip(layer_names, diff_ids):
                member = self.members.get(_clean_name(layer_name) or "")
                if member is None:
                    raise ArchiveError(f"{self.path}: layer {layer_name!r} is missing from the archive.")
                media_type = (OCI_LAYER_ZSTD if member.head.startswith(ZSTD_MAGIC) else OCI_LAYER_GZIP) \
                    if member.compressed else None
                layers.append(Layer(member, diff_id, member.compressed, media_type,
                                    _digest_from_blob_path(layer_name) if member.compressed else None))
            tags = entry.get("RepoTags") or []
            images.append(Image(config, config_digest, layers, [t for t in tags if isinstance(t, str)]
                                if isinstance(tags, list) else []))
        return images

    def _blob(self, digest: str, what: str) -> Member:
        algorithm, hexdigest = digest.split(":", 1) if ":" in digest else ("", digest)
        member = self.members.get(f"blobs/{algorithm}/{hexdigest}")
        if member is None:
            raise ArchiveError(f"{self.path}: {what} {digest} is missing from the archive (no "
                               f"blobs/{algorithm}/{hexdigest}).")
        return member

    def _oci_images(self) -> list[Image]:
        index = self.document("index.json", "OCI index")
        images = [self._oci_image(descriptor) for descriptor in _manifests(self.path, index)]
        if not images:
            raise ArchiveError(f"{self.path}: index.json lists no images.")
        return images

    def _oci_image(self, descriptor: dict[str, Any]) -> Image:
        manifest_member = self._blob(descriptor["digest"], "OCI manifest")
        manifest = self.document(manifest_member.name, "OCI manifest")
        if isinstance(manifest, dict) and (manifest.get("mediaType") == OCI_INDEX or "manifests" in manifest):
            raise ArchiveError(f"{self.path}: multi-platform image indexes are not supported; save one "
                               "platform (e.g. skopeo copy --override-arch amd64).")
        config_digest = _descriptor_digest(manifest.get("config") if isinstance(manifest, dict) else None)
        layer_list = manifest.get("layers", []) if isinstance(manifest, dict) else None
        if config_digest is None or not isinstance(layer_list, list) \
                or any(_descriptor_digest(layer) is None for layer in layer_list):
            raise ArchiveError(f"{self.path}: OCI manifest {descriptor['digest']} has no config descriptor with a "
                               "sha256 digest, or a layer without one: not an image manifest.")
        annotations = descriptor.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        names = [n for n in (annotations.get("io.containerd.image.name"),
                             annotations.get("org.opencontainers.image.ref.name")) if isinstance(n, str) and n]
        config, config_digest, diff_ids = self._config(self._blob(config_digest, "image config").name, config_digest)
        if len(diff_ids) != len(layer_list):
            raise ArchiveError(f"{self.path}: OCI manifest lists {len(layer_list)} layers "
                               f"but the config has {len(diff_ids)} diff_ids.")
        layers = []
        for layer, diff_id in zip(layer_list, diff_ids):
            member = self._blob(layer["digest"], "layer")
            if member.size != layer.get("size", member.size):
                raise ArchiveError(f"{self.path}: blob {layer['digest']} is {member.size} bytes, the manifest "
                                   f"says {layer['size']}.")
            media_type = layer.get("mediaType", OCI_LAYER)
            media_type = media_type if isinstance(media_type, str) else OCI_LAYER
            compressed = media_type.endswith(("gzip", "zstd"))
            layers.append(Layer(member, diff_id, compressed, media_type, layer["digest"]))
        return Image(config, config_digest, layers, names)


def _descriptor_digest(descriptor: Any) -> str | None:
    """The sha256 digest an OCI descriptor names, or None when it is not a descriptor."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    return digest if isinstance(digest, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else None


def _manifests(path: str, index: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError(f"{path}: index.json has no manifests list.")
    for descriptor in index["manifests"]:
        if _descriptor_digest(descriptor) is None:
            raise ArchiveError(f"{path}: index.json lists a manifest without a sha256 digest.")
        yield descriptor


def json_depth(data: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings do not count)."""
    brackets = re.sub(rb"[^\[\]{}]", b"", re.sub(rb'"(?:[^"\\]|\\.)*"', b"", data))
    return max(itertools.accumulate(1 if byte in b"[{" else -1 for byte in brackets), default=0)


def _can_be_document(name: str, size: int, head: bytes) -> bool:
    """Whether a member may be a manifest, index or config: a small JSON text named as image tools name them."""
    if size > SMALL_MEMBER or not head.lstrip()[:1] in (b"{", b"["):
        return False
    return name.endswith(".json") or name.startswith("blobs/")


def _can_be_layer(name: str) -> bool:
    """Whether a member may be a layer (`<id>/layer.tar` in docker save, a blob in OCI archives)."""
    return name.endswith(".tar") or name.startswith("blobs/")


def _clean_name(name: str) -> str | None:
    """Archive-relative member name; refuses absolute names and `..` (path traversal)."""
    problem = name_problem(name)
    if problem == ABSOLUTE:
        raise ArchiveError(f"member name {name!r} is absolute; refusing a path-traversal archive.")
    if problem == PARENT:
        raise ArchiveError(f"member name {name!r} contains '..'; refusing a path-traversal archive.")
    return "/".join(member_parts(name)) or None


def _digest_from_blob_path(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256" and len(parts[2]) == 64:
        return f"sha256:{parts[2]}"
    return None


def _skip(stream: IO[bytes], count: int) -> None:
    while count > 0:
        chunk = stream.read(min(count, READ_SIZE))
        if not chunk:
            raise ArchiveError("the archive ended early (truncated).")
        count -= len(chunk)


class _Slice(io.RawIOBase):
    """Read exactly `size` bytes of a parent stream from its current position."""

    def __init__(self, parent: IO[bytes], size: int, close_parent: bool = True) -> None:
        self._parent, self.remaining, self._close_parent = parent, size, close_parent

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        want = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._parent.read(want)
        if not data:
            raise ArchiveError("the archive ended early (truncated).")
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        if self._close_parent:
            self._parent.close()
        super().close()
