from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import (
    Archive,
    ArchiveError,
    json_depth,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import (
    InvalidReference,
    Repository,
    validate_tag,
)
from fixtures.image_archives import write_docker_archive


def tar_with(path, members):
    """members: (name, bytes | ('symlink', target) | ('fifo',))"""
    with tarfile.open(path, "w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple) and content[0] == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            elif isinstance(content, tuple) and content[0] == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return str(path)


@pytest.mark.parametrize("layout", ["legacy", "oci"])
@pytest.mark.parametrize("compress", [False, True])
def test_docker_save_layouts_are_read(tmp_path, layout, compress):
    facts = write_docker_archive(tmp_path / "a.tar", ["local/pps:1"], [{"f": b"1"}, {"g": b"2"}],
                                 layout=layout, compress=compress)
    archive = Archive.scan(str(facts.path))
    assert archive.gzipped is compress
    image = archive.select(None)
    assert image.config_digest == facts.config_digest
    assert [layer.diff_id for layer in image.layers] == facts.layer_digests
    assert image.names == ["local/pps:1"]


def test_several_images_need_source_image(tmp_path):
    first = write_docker_archive(tmp_path / "a.tar", ["a:1"], [{"f": b"1"}])
    second = write_docker_archive(tmp_path / "b.tar", ["b:1"], [{"g": b"2"}])
    # merge: members of both plus one manifest.json listing both images
    combined = tmp_path / "both.tar"
    manifests = []
    with tarfile.open(combined, "w") as out:
        for facts in (first, second):
            with tarfile.open(facts.path) as src:
                for info in src.getmembers():
                    data = src.extractfile(info).read()
                    if info.name == "manifest.json":
                        manifests += json.loads(data)
                        continue
                    out.addfile(info, io.BytesIO(data))
        body = json.dumps(manifests).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        out.addfile(info, io.BytesIO(body))
    archive = Archive.scan(str(combined))
    with pytest.raises(ArchiveError, match=r"several images \(a:1, b:1\): set source_image"):
        archive.select(None)
    assert archive.select("b:1").config_digest == second.config_digest
    with pytest.raises(ArchiveError, match="has no image 'c:1'"):
        archive.select("c:1")


def test_not_a_tar(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(b"PK\x03\x04 zip, not tar" * 100)
    with pytest.raises(ArchiveError, match="neither a tar archive nor gzip-compressed"):
        Archive.scan(str(path))


def test_truncated_gzip(tmp_path):
    facts = write_docker_archive(tmp_path / "a.tar.gz", ["a:1"], [{"f": bytes(range(256)) * 4000}], compress=True)
    data = facts.path.read_bytes()
    facts.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt gzip data"):
        Archive.scan(str(facts.path))


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "a.tar.gz"
    path.write_bytes(gzip.compress(b"x" * 1000)[:12] + b"\x00garbage" * 50)
    with pytest.raises(ArchiveError, match="corrupt gzip"):
        Archive.scan(str(path))


def test_missing_manifest_is_an_unknown_format(tmp_path):
    path = tar_with(tmp_path / "a.tar", [("hello.txt", b"hi")])
    with pytest.raises(ArchiveError, match="unknown format"):
        Archive.scan(path).images()


def test_invalid_manifest(tmp_path):
    path = tar_with(tmp_path / "a.tar", [("manifest.json", b"{not json")])
    with pytest.raises(ArchiveError, match="manifest 'manifest.json' is not valid JSON"):
        Archive.scan(path).images()


def test_manifest_naming_a_missing_layer(tmp_path):
    config = json.dumps({"rootfs": {"diff_ids": ["sha256:" + "0" * 64]}}).encode()
    manifest = json.dumps([{"Config": "c.json", "Layers": ["l/layer.tar"], "RepoTags": ["a:1"]}]).encode()
    path = tar_with(tmp_path / "a.tar", [("c.json", config), ("manifest.json", manifest)])
    with pytest.raises(ArchiveError, match="layer 'l/layer.tar' is missing"):
        Archive.scan(path).images()


@pytest.mark.parametrize("name", ["../escape.tar", "a/../../escape", "/etc/passwd"])
def test_path_traversal_names_are_refused(tmp_path, name):
    path = tar_with(tmp_path / "a.tar", [("manifest.json", b"[]"), (name, b"x")])
    with pytest.raises(ArchiveError, match="path-traversal"):
        Archive.scan(path)


@pytest.mark.parametrize("target, message", [
    ("../../etc/passwd", "points outside the archive"),
    ("/etc/passwd", "points outside the archive"),
    ("nowhere/layer.tar", "not a file in the archive"),
])
def test_symlink_tricks_are_refused(tmp_path, target, message):
    path = tar_with(tmp_path / "a.tar", [("manifest.json", b"[]"), ("l/layer.tar", ("symlink", target))])
    with pytest.raises(ArchiveError, match=message):
        Archive.scan(path)


def test_symlinked_duplicate_layers_from_old_docker_are_followed(tmp_path):
    path = tar_with(tmp_path / "a.tar", [("one/layer.tar", b"data"), ("two/layer.tar", ("symlink", "../one/layer.tar"))])
    archive = Archive.scan(path)
    assert archive.members["two/layer.tar"] == archive.members["one/layer.tar"]


def test_special_files_and_duplicates_are_refused(tmp_path):
    with pytest.raises(ArchiveError, match="special file"):
        Archive.scan(tar_with(tmp_path / "a.tar", [("pipe", ("fifo",))]))
    with pytest.raises(ArchiveError, match="appears twice"):
        Archive.scan(tar_with(tmp_path / "b.tar", [("x", b"1"), ("x", b"2")]))


def test_config_that_does_not_match_its_digest(tmp_path):
    facts = write_docker_archive(tmp_path / "a.tar", ["a:1"], [{"f": b"1"}], layout="oci")
    rewritten = tmp_path / "b.tar"
    with tarfile.open(facts.path) as src, tarfile.open(rewritten, "w") as out:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == f"blobs/sha256/{facts.config_digest[7:]}":
                data = data.replace(b"amd64", b"arm64")
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match="does not match its digest"):
        Archive.scan(str(rewritten)).images()


def test_latest_is_refused_with_the_reason():
    with pytest.raises(InvalidReference, match="Refusing tag 'latest'.*Use the PPS version"):
        validate_tag("latest")
    assert validate_tag("9.2.0") == "9.2.0"
    with pytest.raises(InvalidReference, match="Invalid tag"):
        validate_tag("-bad")


@pytest.mark.parametrize("name, registry, path", [
    ("registry.example.com:5000/datarobot/pps", "registry.example.com:5000", "datarobot/pps"),
    ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c"),
    ("localhost/x", "localhost", "x"),
    ("datarobot/pps", "registry-1.docker.io", "datarobot/pps"),
])
def test_repository_names(name, registry, path):
    assert Repository.parse(name) == Repository(registry, path)


@pytest.mark.parametrize("name, message", [
    ("https://registry.example.com/x", "without a scheme"),
    ("registry.example.com/UPPER/case", "must be lowercase"),
    ("registry.example.com/x:1.0", "put the tag in `tag`"),
    ("registry.example.com/x@sha256:00", "put the tag in `tag`"),
    ("", "Invalid repository"),
])
def test_invalid_repository_names(name, message):
    with pytest.raises(InvalidReference, match=message):
        Repository.parse(name)


# --- hostile and malformed archives: bounded, and a clear error -------------------------------------------------

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def oci_archive(tmp_path, manifest=None, index=None, config=None, blobs=None, name="oci.tar"):
    """An OCI layout only (no manifest.json), whose manifest, index and config the test may spoil."""
    layer = b"layer-bytes"
    config = config if config is not None else json.dumps({"rootfs": {"diff_ids": ["sha256:" + sha(layer)]}}).encode()
    if manifest is None:
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"digest": "sha256:" + sha(config), "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + sha(layer),
                                "size": len(layer)}]}
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    if index is None:
        index = {"schemaVersion": 2, "manifests": [{"digest": "sha256:" + sha(body), "size": len(body)}]}
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
    for data in (layer, config, body):
        members[f"blobs/sha256/{sha(data)}"] = data
    members.update(blobs or {})
    return tar_with(tmp_path / name, list(members.items()))


def test_a_well_formed_oci_layout_is_read(tmp_path):
    assert len(Archive.scan(oci_archive(tmp_path)).select(None).layers) == 1


@pytest.mark.parametrize("spoil, message", [
    (dict(manifest={"schemaVersion": 2, "layers": []}), "has no config descriptor with a sha256 digest"),
    (dict(manifest={"schemaVersion": 2, "config": {"digest": "md5:abc"}, "layers": []}),
     "has no config descriptor with a sha256 digest"),
    (dict(manifest={"schemaVersion": 2, "config": {"digest": "sha256:" + "1" * 64}, "layers": [{"size": 1}]}),
     "or a layer without one"),
    (dict(manifest=[1, 2, 3]), "has no config descriptor"),
    (dict(manifest={"schemaVersion": 2, "config": {"digest": "sha256:" + "1" * 64}, "layers": []}),
     r"image config sha256:1{64} is missing from the archive"),
    (dict(index={"manifests": [{"digest": "sha256:" + "2" * 64}]}),
     r"OCI manifest sha256:2{64} is missing from the archive \(no blobs/sha256/2{64}\)"),
    (dict(index={"manifests": "all of them"}), "index.json has no manifests list"),
    (dict(index={"manifests": [{"size": 3}]}), "index.json lists a manifest without a sha256 digest"),
    (dict(index=[]), "index.json has no manifests list"),
    (dict(config=b'{"rootfs": {"diff_ids": 7}}'), "has no rootfs.diff_ids list"),
    (dict(config=b'["not", "a", "config"]'), "has no rootfs.diff_ids list"),
    (dict(manifest=b"[" * 5000 + b"]" * 5000), "nests JSON more than 64 levels deep"),
    (dict(config=b'{"rootfs":' + b"[" * 100000 + b"]" * 100000 + b"}"), "nests JSON more than 64 levels deep"),
])
def test_malformed_oci_layouts_fail_clearly(tmp_path, spoil, message):
    archive = Archive.scan(oci_archive(tmp_path, **spoil))
    with pytest.raises(ArchiveError, match=message):
        archive.images()


@pytest.mark.parametrize("entry", [{"Config": 5, "Layers": []}, {"Config": "c.json", "Layers": 3},
                                   {"Config": "c.json", "Layers": [None]}, "a string"])
def test_malformed_docker_manifest_entries_fail_clearly(tmp_path, entry):
    path = tar_with(tmp_path / "a.tar", [("manifest.json", json.dumps([entry]).encode())])
    with pytest.raises(ArchiveError, match="entry without a Config name and a Layers list of names"):
        Archive.scan(path).images()


def test_deep_json_is_refused_before_parsing(tmp_path):
    """Python's parser would raise RecursionError (a traceback) on this; the depth is bounded first."""
    path = tar_with(tmp_path / "a.tar", [("manifest.json", b"[" * 200000 + b"]" * 200000)])
    with pytest.raises(ArchiveError, match="nests JSON more than 64 levels deep, which no image tool writes"):
        Archive.scan(path).images()


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth(b'{"a": "[[[[{{{", "b": [1, {"c": "\\"]]"}]}') == 3
    assert json_depth(b"3") == 0


def test_only_members_that_can_be_manifests_or_configs_are_held(tmp_path):
    facts = write_docker_archive(tmp_path / "a.tar", ["a:1"], [{"f": b"1"}, {"g": b"2"}])
    archive = Archive.scan(str(facts.path))
    assert set(archive.documents) == {"manifest.json", f"{facts.config_digest[7:]}.json"}
    assert archive.held == sum(len(data) for data in archive.documents.values())
    assert archive.select(None).config_digest == facts.config_digest


def test_a_small_layer_is_handed_to_the_single_pass_reader_not_held(tmp_path):
    facts = write_docker_archive(tmp_path / "a.tar.gz", ["a:1"], [{"f": b"1"}], compress=True)
    handed = []
    archive = Archive.scan(str(facts.path), on_large_member=lambda member, reader: handed.append(
        (member.name, reader.read())))
    assert [name for name, _data in handed] == [layer.member.name for layer in archive.select(None).layers]
    assert not any(name.endswith("layer.tar") for name in archive.documents)


def test_too_many_members_are_refused_before_the_rest_is_read(tmp_path):
    path = tar_with(tmp_path / "many.tar", [(f"m/{i}", b"") for i in range(10_001)])
    with pytest.raises(ArchiveError, match="has more than 10000 members, far more than an image archive has"):
        Archive.scan(path)


def test_too_much_held_json_is_refused(tmp_path):
    document = b"{" + b" " * (4 * 1024 * 1024 - 2) + b"}"  # the largest a document may be, 17 times: 68 MiB
    path = tmp_path / "held.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as out, tarfile.open(fileobj=out, mode="w|") as tar:
        for i in range(17):
            info = tarfile.TarInfo(f"c{i}.json")
            info.size = len(document)
            tar.addfile(info, io.BytesIO(document))
    with pytest.raises(ArchiveError, match="holds more than 64 MiB of JSON documents"):
        Archive.scan(str(path))


def test_a_gzip_bomb_is_refused_at_the_member_header(tmp_path):
    """2 GiB of zeros in a 2 MiB file: refused as soon as the member's header claims them, before inflating."""
    info = tarfile.TarInfo("bomb/layer.tar")
    info.size = 2 * 1024 ** 3
    zeros = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)
    path = tmp_path / "bomb.tar.gz"
    with open(path, "wb") as out:
        out.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        for _copy in range(32):
            out.write(zeros)  # gzip members one after another are one gzip stream
    assert path.stat().st_size < 4 * 1024 * 1024
    streamed = []
    with pytest.raises(ArchiveError, match="more than 100 times the file's size.*refusing a decompression bomb"):
        Archive.scan(str(path), on_large_member=lambda member, reader: streamed.append(member))
    assert streamed == []  # refused at the header: the member was never handed on to be inflated
