"""The download module through the Ansible CLI, against a local file server (tests/file_server.py): the cache, a
transfer cut midway, check mode, bad inputs and the URL's secrets. Each case records one ledger line before its
asserts."""

from __future__ import annotations

import hashlib
import os

from ansible_cli import run_module
from file_server import FileServer

MODULE = "datarobot_mlops.management_agent.download"
DATA = os.urandom(2 * 1024 * 1024 + 7)
CHECKSUM = "sha256:" + hashlib.sha256(DATA).hexdigest()


def cache_files(cache) -> list[str]:
    return sorted(name for name in os.listdir(cache) if not name.endswith(".lock")) if cache.exists() else []


def test_download_then_cached_then_check_mode(tmp_path, ledger):
    cache = tmp_path / "cache"
    with FileServer({"/agent.tar.gz": DATA}) as server:
        args = {"url": server.url("/agent.tar.gz"), "checksum": CHECKSUM, "cache_dir": str(cache)}
        check = run_module(MODULE, args, check=True)
        untouched = server.gets() == [] and cache_files(cache) == []
        ledger.record("check_mode", "download: check mode fetches nothing", held=untouched and check.result.get(
            "would_download") == len(DATA), detail=f"GETs={len(server.gets())}; cache={cache_files(cache)}")
        assert check.result["changed"] and check.result["would_download"] == len(DATA), check.stdout[-2000:]
        assert untouched
        first = run_module(MODULE, args)
        assert first.result["changed"] and first.result["bytes_downloaded"] == len(DATA), first.stdout[-2000:]
        assert (cache / "agent.tar.gz").read_bytes() == DATA
        again = run_module(MODULE, args)
        ledger.record("idempotence", "download: a cached, verified file is not fetched again",
                      held=not again.result.get("changed") and len(server.gets()) == 1,
                      detail=f"GETs={len(server.gets())}", count=int(bool(again.result.get("changed"))))
        assert not again.result["changed"] and again.result["bytes_downloaded"] == 0
        assert len(server.gets()) == 1, "the second run asked the server again"
        assert not run_module(MODULE, args, check=True).result["changed"]


def test_a_cut_download_resumes_and_secrets_stay_hidden(tmp_path, ledger):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        server.cut(len(DATA) // 2)
        url = server.url("/pps.tar.gz?X-Amz-Signature=s1gnatur3tok3n", netloc_prefix="robot:pa55w0rd-x@")
        run = run_module(MODULE, {"url": url, "checksum": CHECKSUM, "cache_dir": str(tmp_path)}, verbosity=3)
        complete = run.result.get("changed") and (tmp_path / "pps.tar.gz").read_bytes() == DATA
        ledger.record("fault", "download: connection cut midway, resumed with a Range request",
                      held=bool(complete) and server.body_bytes < 2 * len(DATA),
                      detail=f"sent {server.body_bytes} bytes for {len(DATA)}; GETs={len(server.gets())}")
        assert complete, run.stdout[-2000:]
        assert server.body_bytes < 2 * len(DATA) and len(server.gets()) == 2
        assert run.result["url"] == server.url("/pps.tar.gz")
        stored = b"".join((tmp_path / name).read_bytes() for name in os.listdir(tmp_path))
        hits = [secret for secret in ("s1gnatur3tok3n", "pa55w0rd-x")
                if secret in run.stdout + run.stderr or secret.encode() in stored]
        ledger.record("secret", "download: URL login and signed query in -vvv output and the cache", held=not hits,
                      detail=f"found: {hits}", count=len(hits))
        assert hits == []


def test_mismatch_and_not_found_fail_clearly_and_keep_nothing(tmp_path, ledger):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        cases = [("checksum mismatch", {"url": server.url("/pps.tar.gz"), "checksum": "sha256:" + "1" * 64},
                  "nothing was kept"),
                 ("URL answers 404", {"url": server.url("/nope.tgz"), "checksum": CHECKSUM}, "answered 404"),
                 ("checksum not <algorithm>:<hex>", {"url": server.url("/pps.tar.gz"), "checksum": "sha256:abc"},
                  "64 hexadecimal digits"),
                 ("not an http(s) URL", {"url": "ftp://127.0.0.1/pps.tar.gz", "checksum": CHECKSUM},
                  "not an http:// or https:// URL")]
        for case, args, expected in cases:
            outcome = run_module(MODULE, {**args, "cache_dir": str(tmp_path)})
            message = outcome.result.get("msg", "")
            clean = "Traceback" not in outcome.stdout + outcome.stderr and cache_files(tmp_path) == []
            ledger.record("bad_input", f"download: {case}", held=outcome.failed and expected in message and clean,
                          detail=message[:200])
            assert outcome.failed and expected in message, outcome.stdout[-2000:]
            assert clean
