"""A local HTTP file server for download tests: Range requests, ETag / If-Range, and faults on demand.

It serves byte strings by path. `cut(after_bytes)` drops the connection of the next GET after that many body
bytes (a network failure midway); `ignore_range` answers every GET whole, as servers without Range support do;
`redirects` sends a path elsewhere (another origin, to see which headers follow). `requests` records
(method, path, headers) and `body_bytes` counts what was sent, cut answers included.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    ignore_range: bool = False
    cuts: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    body_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "FileServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                owner._answer(self, body=False)

            def do_GET(self) -> None:
                owner._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str, netloc_prefix: str = "") -> str:
        assert self.server is not None
        return f"http://{netloc_prefix}127.0.0.1:{self.server.server_address[1]}{path}"

    def cut(self, after_bytes: int, count: int = 1) -> None:
        with self.lock:
            self.cuts += [after_bytes] * count

    def gets(self, path: str | None = None) -> list[dict[str, str]]:
        return [headers for method, seen, headers in self.requests if method == "GET" and path in (None, seen)]

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = handler.path.split("?", 1)[0]
        with self.lock:
            self.requests.append((handler.command, handler.path, dict(handler.headers)))
            cut = self.cuts.pop(0) if body and self.cuts else None
        if path in self.redirects:
            handler.send_response(302)
            handler.send_header("Location", self.redirects[path])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if path not in self.files:
            handler.send_error(404)
            return
        data = self.files[path]
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start = self._range_start(handler, etag, len(data))
        if start is not None and start >= len(data):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(206 if start is not None else 200)
        start = start or 0
        if handler.command == "GET" and start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(data) - start))
        handler.send_header("ETag", etag)
        handler.send_header("Accept-Ranges", "none" if self.ignore_range else "bytes")
        handler.end_headers()
        if body:
            self._send(handler, data[start:], cut)

    def _range_start(self, handler: BaseHTTPRequestHandler, etag: str, size: int) -> int | None:
        wanted = handler.headers.get("Range", "")
        if self.ignore_range or not wanted.startswith("bytes=") or not wanted.endswith("-"):
            return None
        if_range = handler.headers.get("If-Range")
        if if_range is not None and if_range != etag:
            return None  # the file changed: the whole file
        return int(wanted[len("bytes="):-1])

    def _send(self, handler: BaseHTTPRequestHandler, data: bytes, cut: int | None) -> None:
        payload = data if cut is None else data[:cut]
        handler.wfile.write(payload)
        handler.wfile.flush()
        with self.lock:
            self.body_bytes += len(payload)
        if cut is not None:
            handler.close_connection = True
            handler.connection.shutdown(2)
