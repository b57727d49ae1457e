from __future__ import annotations

import os

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_cache import (
    BLOB_PLACES,
    PushCache,
    default_cache_path,
)


def test_layers_are_keyed_by_diff_id_and_compressor(tmp_path):
    cache = PushCache(None)
    cache.remember_layer("sha256:a", "zlib-1", "sha256:blob1", 10)
    assert cache.layer("sha256:a", "zlib-1") == {"digest": "sha256:blob1", "size": 10}
    assert cache.layer("sha256:a", "zlib-6") is None
    assert cache.layer("sha256:b", "zlib-1") is None


def test_blob_places_are_per_registry_newest_last_and_bounded():
    cache = PushCache(None)
    for index in range(BLOB_PLACES + 2):
        cache.remember_blob("r1:5000", f"repo{index}", "sha256:x")
    cache.remember_blob("r1:5000", "repo3", "sha256:x")  # already known: not repeated
    assert cache.blob_places("r1:5000", "sha256:x") == [f"repo{i}" for i in range(2, BLOB_PLACES + 2)]
    assert cache.blob_places("r2:5000", "sha256:x") == []


def test_the_archive_key_changes_when_the_file_or_the_chosen_image_does(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(b"one")
    key = PushCache.archive_key(str(path), None)
    assert key == PushCache.archive_key(str(path), None)
    assert key != PushCache.archive_key(str(path), "other:1")
    path.write_bytes(b"longer")
    assert key != PushCache.archive_key(str(path), None)


def test_saved_facts_come_back_and_a_damaged_file_is_ignored(tmp_path):
    path = str(tmp_path / "sub" / "cache.json")
    cache = PushCache(path)
    cache.remember_layer("sha256:a", "none", "sha256:a", 3)
    cache.save()
    assert PushCache(path).layer("sha256:a", "none") == {"digest": "sha256:a", "size": 3}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("{not json")
    assert PushCache(path).data == {"archives": {}, "layers": {}, "blobs": {}}


def test_no_path_means_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    PushCache(None).save()
    assert os.listdir(tmp_path) == []


def test_default_path_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_path() == str(tmp_path / "datarobot_mlops" / "pps_image.json")
