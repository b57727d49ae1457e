"""_download against a real local HTTP server (tests/file_server.py): resume, restart, checksum, origins, errors."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._download import (
    Checksum,
    DownloadError,
    Downloader,
    Source,
)
from file_server import FileServer

DATA = os.urandom(3 * 1024 * 1024 + 123)
SHA256 = "sha256:" + hashlib.sha256(DATA).hexdigest()


def downloader(server: FileServer, cache, path="/pps.tar.gz", checksum=SHA256, retries=3, **source) -> Downloader:
    return Downloader(Source(server.url(path) if "://" not in path else path, retries=retries, backoff=0, **source),
                      Checksum.parse(checksum), str(cache))


def leftovers(cache) -> list[str]:
    return sorted(name for name in os.listdir(cache) if not name.endswith(".lock"))


def test_downloads_verifies_and_a_second_run_changes_nothing(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        first = downloader(server, tmp_path).fetch()
        assert first.changed and first.downloaded == len(DATA) and not first.resumed
        assert (tmp_path / "pps.tar.gz").read_bytes() == DATA
        assert leftovers(tmp_path) == ["pps.tar.gz"]
        sent = server.body_bytes
        again = downloader(server, tmp_path).fetch()
        assert not again.changed and again.downloaded == 0 and server.body_bytes == sent
        assert len(server.gets()) == 1, "a cached, verified file is not asked for again"


def test_a_cut_transfer_resumes_with_a_range_request(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        server.cut(len(DATA) // 2)
        outcome = downloader(server, tmp_path).fetch()
        assert outcome.changed and (tmp_path / "pps.tar.gz").read_bytes() == DATA
        gets = server.gets()
        assert len(gets) == 2 and gets[1]["If-Range"] and gets[1]["Range"].startswith("bytes=")
        offset = int(gets[1]["Range"][len("bytes="):-1])  # what was written before the cut (whole blocks)
        assert len(DATA) // 2 - 64 * 1024 <= offset <= len(DATA) // 2
        assert server.body_bytes == len(DATA) // 2 + len(DATA) - offset < 2 * len(DATA)


def test_a_part_left_by_an_earlier_run_is_continued(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        server.cut(1000, count=2)
        with pytest.raises(DownloadError, match="next run continues from there"):
            downloader(server, tmp_path, retries=1).fetch()
        assert (tmp_path / "pps.tar.gz.part").stat().st_size == 2000  # the retry continued, and was cut again
        state = json.loads((tmp_path / "pps.tar.gz.part.json").read_text())
        assert state["length"] == len(DATA) and state["etag"]
        outcome = downloader(server, tmp_path).fetch()
        assert outcome.resumed and outcome.downloaded == len(DATA) - 2000
        assert (tmp_path / "pps.tar.gz").read_bytes() == DATA and leftovers(tmp_path) == ["pps.tar.gz"]


def test_a_server_that_ignores_range_restarts_from_zero(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}, ignore_range=True) as server:
        server.cut(len(DATA) // 3)
        outcome = downloader(server, tmp_path).fetch()
        assert (tmp_path / "pps.tar.gz").read_bytes() == DATA
        gets = server.gets()
        assert len(gets) == 2 and gets[1]["Range"], "the whole answer to the Range request was used, not asked again"
        assert outcome.restarts == 1 and outcome.downloaded == len(DATA) // 3 + len(DATA)


def test_a_changed_file_is_not_glued_onto_the_old_part(tmp_path):
    changed = os.urandom(len(DATA))
    with FileServer({"/pps.tar.gz": DATA}) as server:
        server.cut(4096, count=2)
        with pytest.raises(DownloadError):
            downloader(server, tmp_path, retries=1).fetch()
        server.files["/pps.tar.gz"] = changed  # new ETag: If-Range makes the server send it whole
        outcome = downloader(server, tmp_path, checksum="sha256:" + hashlib.sha256(changed).hexdigest()).fetch()
        assert (tmp_path / "pps.tar.gz").read_bytes() == changed and outcome.downloaded == len(changed)


def test_checksum_mismatch_keeps_nothing(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        with pytest.raises(DownloadError, match=r"not the expected 0{64}: nothing was kept") as error:
            downloader(server, tmp_path, checksum="sha256:" + "0" * 64).fetch()
        assert hashlib.sha256(DATA).hexdigest() in str(error.value)
        assert leftovers(tmp_path) == []


def test_other_algorithms_and_bad_checksums():
    assert Checksum.parse("SHA512:" + "a" * 128).algorithm == "sha512"
    assert Checksum.parse("md5:" + "b" * 32).digest == "b" * 32
    for bad in ("", "sha256", "crc32:abcd", "sha256:abc", "sha256:" + "g" * 64, "shake_128:" + "a" * 32):
        with pytest.raises(DownloadError):
            Checksum.parse(bad)


def test_not_found_and_unreachable_say_so_without_the_token(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match="answered 404.*check the URL") as error:
            downloader(server, tmp_path, path=server.url("/missing.tgz?token=s3cr3t-query")).fetch()
        assert "s3cr3t" not in str(error.value)
        port = server.server.server_address[1]
    with pytest.raises(DownloadError, match="cannot reach") as error:
        Downloader(Source(f"http://u:pa55w0rd@127.0.0.1:{port}/x.tgz?sig=s3cr3t", retries=1, backoff=0),
                   Checksum.parse(SHA256), str(tmp_path)).fetch()
    assert "s3cr3t" not in str(error.value) and "pa55w0rd" not in str(error.value)
    assert leftovers(tmp_path) == []


def test_credentials_go_only_to_the_urls_origin(tmp_path):
    with FileServer({"/blob": DATA}) as storage, FileServer({}) as origin:
        origin.redirects["/pps.tar.gz"] = storage.url("/blob")
        url = origin.url("/pps.tar.gz", netloc_prefix="robot:pa55w0rd@")
        Downloader(Source(url, headers={"X-Api-Key": "k3y"}, backoff=0), Checksum.parse(SHA256), str(tmp_path)).fetch()
        first = origin.gets()[0]
        assert first["Authorization"].startswith("Basic ") and first["X-Api-Key"] == "k3y"
        assert "Authorization" not in storage.gets()[0] and "X-Api-Key" not in storage.gets()[0]
        assert (tmp_path / "pps.tar.gz").read_bytes() == DATA
        for name in os.listdir(tmp_path):
            assert b"pa55w0rd" not in (tmp_path / name).read_bytes()


def test_https_to_http_redirect_is_refused(tmp_path):
    with FileServer({}) as server:
        session = _RedirectingSession(server.url("/pps.tar.gz"))
        source = Source("https://files.example/pps.tar.gz", backoff=0)
        with pytest.raises(DownloadError, match="from HTTPS to plain HTTP"):
            Downloader(source, Checksum.parse(SHA256), str(tmp_path), session=session).fetch()
        assert server.requests == []


class _RedirectingSession:
    """A session whose https server answers with a redirect to plain http (no TLS server needed for that)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def request(self, method, url, **kwargs):
        import requests

        response = requests.Response()
        response.status_code, response.url, response.raw = 302, url, io.BytesIO()
        response.headers["Location"] = self.target
        return response


def test_probe_reports_the_length_and_writes_nothing(tmp_path):
    with FileServer({"/pps.tar.gz": DATA}) as server:
        outcome = downloader(server, tmp_path).probe()
        assert outcome.changed and outcome.would_download == len(DATA)
        assert server.gets() == [] and leftovers(tmp_path) == []


def test_probe_without_head_goes_on_without_a_length(tmp_path, monkeypatch):
    """A URL signed for GET only (object storage) answers HEAD with 403: check mode must not fail on that."""
    with FileServer({"/pps.tar.gz": DATA}) as server:
        monkeypatch.setattr(server, "_answer", _refusing_head(server._answer))
        outcome = downloader(server, tmp_path).probe()
        assert outcome.changed and outcome.would_download is None and leftovers(tmp_path) == []
        with pytest.raises(DownloadError, match="answered 404"):
            downloader(server, tmp_path, path="/missing.tgz").probe()


def _refusing_head(answer):
    def refuse(handler, body):
        if handler.command == "HEAD" and handler.path == "/pps.tar.gz":
            handler.send_error(403)
            return
        answer(handler, body)
    return refuse


def test_file_names(tmp_path):
    with FileServer({"/a/": DATA}) as server:
        with pytest.raises(DownloadError, match="set a file name"):
            downloader(server, tmp_path, path="/a/")
        named = Downloader(Source(server.url("/a/")), Checksum.parse(SHA256), str(tmp_path), name="x.tgz")
        assert named.path == str(tmp_path / "x.tgz")


class _FillingUp:
    """A cache file on a disk with room for `room` more bytes; past that, write fails as a full disk makes it."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __getattr__(self, name: str):
        return getattr(self.handle, name)

    def write(self, block: bytes) -> int:
        if len(block) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(block)
        return self.handle.write(block)


def test_a_full_disk_stops_the_download_at_once_and_keeps_what_arrived(tmp_path, monkeypatch):
    """Not a cut connection to retry: the message names the file, the reason and the option that moves the cache."""
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _download

    def full_open(path, *args, **kwargs):
        handle = open(path, *args, **kwargs)  # pylint: disable=consider-using-with  # the caller's with closes it
        return _FillingUp(handle, 200 * 1024) if str(path).endswith(".part") else handle

    with FileServer({"/pps.tar.gz": DATA}) as server:
        monkeypatch.setattr(_download, "open", full_open, raising=False)
        with pytest.raises(DownloadError, match=rf"cannot write the download of {server.url('/pps.tar.gz')} to "
                                                rf"{tmp_path}/pps\.tar\.gz\.part: No space left on device\. Free space "
                                                r"there, or set mlops_download_cache_dir \(cache_dir\) to a "
                                                r"directory with room for it; the \d+ bytes received are kept"):
            downloader(server, tmp_path).fetch()
        assert len(server.gets()) == 1, "a full disk is not retried as a cut connection"
        kept = (tmp_path / "pps.tar.gz.part").stat().st_size
        assert 0 < kept <= 200 * 1024
        monkeypatch.undo()
        outcome = downloader(server, tmp_path).fetch()
        assert outcome.resumed and outcome.downloaded == len(DATA) - kept
        assert (tmp_path / "pps.tar.gz").read_bytes() == DATA


@pytest.mark.parametrize("url, expected", [
    ("https://robot:pa55w0rd@[fe80::1/x.tgz?sig=s3cr3t#frag",
     r"'https://\[fe80::1/x\.tgz' cannot be read \(Invalid IPv6 URL\)"),
    ("https://robot:pa55w0rd\uff03@files.example/x.tgz?sig=s3cr3t",  # a fullwidth '#': NFKC makes it a '#'
     r"'https://files\.example/x\.tgz' cannot be read \(netloc '\.\.\.@files\.example' contains invalid characters"),
], ids=["unclosed-bracket", "nfkc"])
def test_a_url_urlsplit_cannot_read_is_a_clear_error_without_its_secrets(url, expected):
    with pytest.raises(DownloadError, match=rf"url {expected}.*: check it") as error:
        Source(url)
    assert "pa55w0rd" not in str(error.value) and "s3cr3t" not in str(error.value)
