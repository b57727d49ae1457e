"""The pps_image module's run between its arguments and its result: the push cache, in check mode and when it
cannot be written, and what an unreadable archive is called."""

from __future__ import annotations

import errno
import os
import types
from pathlib import Path

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _image_push, _pps_push
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_archive import ArchiveError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._image_reference import Repository
from fixtures.image_archives import write_docker_archive
from test__image_push import REGISTRY, MemoryRegistry

NAME = f"{REGISTRY}/datarobot/pps"


def module(src: Path, cache: Path, check_mode: bool = False):
    """The parts of the module _pps_push.push reads: its parameters, check mode, diff, and warn()."""
    params = dict(src=str(src), source_image=None, name=NAME, tag="1.0", method="direct", cache=str(cache),
                  compression="gzip", compression_level=1, workers=2, manifest_format="auto", mount_from=[],
                  spool=False, spool_dir=None, spool_max_size=1)
    warnings: list[str] = []
    return types.SimpleNamespace(params=params, check_mode=check_mode, _diff=False, warn=warnings.append,
                                 warnings=warnings)


def target(client: MemoryRegistry) -> _pps_push.Target:
    return _pps_push.Target(Repository.parse(NAME), ["1.0"], client, None)


@pytest.fixture
def archive(tmp_path):
    return write_docker_archive(tmp_path / "a.tar", ["pps:1"], [{"model.bin": os.urandom(100_000)}]).path


def test_check_mode_writes_no_cache(archive, tmp_path):
    cache = tmp_path / "cache" / "pps_image.json"
    client = MemoryRegistry()
    result = _pps_push.push(module(archive, cache, check_mode=True), target(client), None)
    assert result["changed"] and result["would_upload"] and client.manifests == {}
    assert not cache.exists()


def test_a_cache_that_cannot_be_written_leaves_the_push_done_with_a_warning(archive, tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    cache = in_the_way / "sub" / "pps_image.json"
    client, run = MemoryRegistry(), module(archive, cache)
    result = _pps_push.push(run, target(client), None)
    assert result["changed"] and result["digest"] and ("datarobot/pps", "1.0") in client.manifests
    assert len(run.warnings) == 1 and str(cache) in run.warnings[0] and str(archive) not in run.warnings[0]


def test_an_archive_that_cannot_be_read_is_still_called_so(archive, tmp_path, monkeypatch):
    def failing_read(path, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), path)
    monkeypatch.setattr(_image_push.Archive, "scan", failing_read)
    monkeypatch.setattr(_image_push.Archive, "__init__", lambda self, path, *args, **kwargs: failing_read(path))
    with pytest.raises(ArchiveError, match=f"Cannot read {archive}: Input/output error"):
        _pps_push.push(module(archive, tmp_path / "cache.json"), target(MemoryRegistry()), None)
