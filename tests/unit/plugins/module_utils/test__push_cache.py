from __future__ import annotations

import os

import pytest

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


@pytest.mark.parametrize("content", ['{"archives": [], "layers": null, "blobs": "x"}', '[["layers", 1]]', '["ab"]',
                                     "null", '"text"', '{"layers": {"sha256:a|none": {"digest": "d", "size": 1}}, '
                                                       '"blobs": [1]}'],
                         ids=["sections", "pairs", "two-letter-list", "null", "string", "one-good-section"])
def test_a_cache_file_of_another_shape_is_as_good_as_none(tmp_path, content):
    """Only a hint: a section that is no object (or a file that is none) is taken as empty, never an error mid-push."""
    path = tmp_path / "cache.json"
    path.write_text(content)
    cache = PushCache(str(path))
    assert set(cache.data) == {"archives", "layers", "blobs"}
    assert all(isinstance(section, dict) for section in cache.data.values())
    cache.remember_layer("sha256:b", "none", "sha256:b", 2)
    cache.remember_blob("r1:5000", "repo", "sha256:b")
    cache.data["archives"]["key"] = {"config_digest": "sha256:c", "blobs": 1}
    assert cache.blob_places("r1:5000", "sha256:b") == ["repo"] and cache.layer("sha256:x", "none") is None
    cache.save()
    assert PushCache(str(path)).layer("sha256:b", "none") == {"digest": "sha256:b", "size": 2}
    if content.startswith('{"layers"'):
        assert cache.layer("sha256:a", "none") == {"digest": "d", "size": 1}  # what has the right shape is kept
