"""The download module through the Ansible CLI, against a local file server: cache, resume, check mode, secrets."""

from __future__ import annotations

import hashlib
import os

from ansible_cli import run_module
from file_server import FileServer

MODULE = "datarobot_mlops.management_agent.download"
DATA = os.urandom(2 * 1024 * 1024 + 7)
CHECKSUM = "sha256:" + hashlib.sha256(DATA).hexdigest()


def test_download_then_cached_then_check_mode(tmp_path):
    cache = tmp_path / "cache"
    with FileServer({"/agent.tar.gz": DATA}) as server:
        url = server.url("/agent.tar.gz")
        check = run_module(MODULE, {"url": url, "checksum": CHECKSUM, "cache_dir": str(cache)}, check=True)
        assert check.result["changed"] and check.result["would_download"] == len(DATA), check.stdout[-2000:]
        assert server.gets() == [] and not (cache / "agent.tar.gz").exists()
        first = run_module(MODULE, {"url": url, "checksum": CHECKSUM, "cache_dir": str(cache)})
        assert first.result["changed"] and first.result["bytes_downloaded"] == len(DATA), first.stdout[-2000:]
        assert (cache / "agent.tar.gz").read_bytes() == DATA
        again = run_module(MODULE, {"url": url, "checksum": CHECKSUM, "cache_dir": str(cache)})
        assert not again.result["changed"] and again.result["bytes_downloaded"] == 0
        assert len(server.gets()) == 1, "the second run asked the server again"
        cached_check = run_module(MODULE, {"url": url, "checksum": CHECKSUM, "cache_dir": str(cache)}, check=True)
        assert not cached_check.result["changed"]


def test_a_cut_download_resumes_and_secrets_stay_hidden(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        server.cut(len(DATA) // 2)
        url = server.url("/pps.tar.gz?X-Amz-Signature=s1gnatur3tok3n", netloc_prefix="robot:pa55w0rd-x@")
        run = run_module(MODULE, {"url": url, "checksum": CHECKSUM, "cache_dir": str(tmp_path)}, verbosity=3)
        assert run.result["changed"] and (tmp_path / "pps.tar.gz").read_bytes() == DATA, run.stdout[-2000:]
        assert server.body_bytes < 2 * len(DATA) and len(server.gets()) == 2
        assert run.result["url"] == server.url("/pps.tar.gz")
        for secret in ("s1gnatur3tok3n", "pa55w0rd-x"):
            assert secret not in run.stdout + run.stderr
            for name in os.listdir(tmp_path):
                assert secret.encode() not in (tmp_path / name).read_bytes()


def test_mismatch_and_not_found_fail_clearly_and_keep_nothing(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        wrong = run_module(MODULE, {"url": server.url("/pps.tar.gz"), "checksum": "sha256:" + "1" * 64,
                                    "cache_dir": str(tmp_path)})
        assert wrong.failed and "nothing was kept" in wrong.result["msg"], wrong.stdout[-2000:]
        assert "Traceback" not in wrong.stdout + wrong.stderr
        assert [name for name in os.listdir(tmp_path) if not name.endswith(".lock")] == []
        missing = run_module(MODULE, {"url": server.url("/nope.tgz"), "checksum": CHECKSUM, "cache_dir": str(tmp_path)})
        assert missing.failed and "answered 404" in missing.result["msg"]
        bad = run_module(MODULE, {"url": server.url("/pps.tar.gz"), "checksum": "sha256:abc", "cache_dir": str(tmp_path)})
        assert bad.failed and "64 hexadecimal digits" in bad.result["msg"]
