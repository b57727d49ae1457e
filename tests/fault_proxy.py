"""A fault-injecting HTTP proxy in front of a registry, for tests of retries and resumed uploads.

It forwards every request unchanged (the Host header too, so the registry's
upload Locations point back at the proxy) unless a fault is armed: answer the
next N matching requests with an error status; read part of a matching
request's body and drop the connection, as a network failure would (with
`forward`, the registry receives that part first, then sees the connection
end); or forward a request whole and drop the connection instead of passing
the registry's answer on (a lost response). `ecr_like` answers as Amazon ECR
does to a stored chunk: 201 instead of 202 to every PATCH, with the Range of
the upload's first PATCH (ECR's Range does not advance). `body_bytes` counts the request
body bytes each method sent through the proxy, cut requests included. `rate`
(bytes per second, all connections together) paces request bodies as a slow
link would.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Match = Callable[[str, str], bool]


@dataclass
class Faults:
    statuses: list[tuple[Match, int]] = field(default_factory=list)
    cuts: list[tuple[Match, int]] = field(default_factory=list)
    forwarded_cuts: list[tuple[Match, int]] = field(default_factory=list)
    lost_answers: list[tuple[Match, bool]] = field(default_factory=list)
    body_bytes: dict[str, int] = field(default_factory=dict)
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status or -1 for a cut)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rate: int = 0  # request body bytes per second through the proxy, all connections together; 0: no limit
    ecr_like: bool = False  # PATCH answered 201, with a Range frozen at the upload's first PATCH
    _first_ranges: dict[str, str] = field(default_factory=dict)  # upload UUID -> the Range ECR keeps answering
    _free_at: float = 0.0  # when the limited link is free again

    def pace(self, size: int) -> None:
        """Wait until `size` more bytes fit under `rate`."""
        if not self.rate:
            return
        with self.lock:
            start = max(self._free_at, time.monotonic())
            self._free_at = start + size / self.rate
            wait = self._free_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def fail(self, count: int, status: int, match: Match) -> None:
        with self.lock:
            self.statuses += [(match, status)] * count

    def cut(self, after_bytes: int, match: Match, count: int = 1, forward: bool = False) -> None:
        """Drop the connection after `after_bytes` of the body; `forward` hands those bytes to the registry first."""
        with self.lock:
            if forward:
                self.forwarded_cuts += [(match, after_bytes)] * count
            else:
                self.cuts += [(match, after_bytes)] * count

    def lose_answer(self, match: Match, count: int = 1) -> None:
        """Forward the request whole, let the registry act on it, then drop the connection without its answer."""
        with self.lock:
            self.lost_answers += [(match, True)] * count

    def frozen_range(self, path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """`headers` with the Range this upload's first PATCH got, as ECR answers every later PATCH."""
        upload = path.split("/blobs/uploads/", 1)[-1].split("?", 1)[0]
        with self.lock:
            first = self._first_ranges.setdefault(upload, dict(headers).get("Range", ""))
        return [(key, first if key.lower() == "range" else value) for key, value in headers]

    def count(self, method: str, size: int) -> None:
        with self.lock:
            self.body_bytes[method] = self.body_bytes.get(method, 0) + size

    def _take(self, queue: list, method: str, path: str):
        with self.lock:
            for index, (match, value) in enumerate(queue):
                if match(method, path):
                    del queue[index]
                    return value
        return None


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.faults = Faults()
        faults, upstream = self.faults, upstream_port

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                method, path = self.command, self.path
                length = int(self.headers.get("Content-Length") or 0)
                cut = faults._take(faults.cuts, method, path)
                forwarded_cut = faults._take(faults.forwarded_cuts, method, path)
                if cut is not None or forwarded_cut is not None:
                    part = self.rfile.read(min(cut if cut is not None else forwarded_cut, length))
                    faults.count(method, len(part))
                    if forwarded_cut is not None:
                        self._forward_part(part)
                    faults.seen.append((method, path, -1))
                    self._drop()
                    return
                body = self._read_body(length) if length else None
                faults.count(method, len(body or b""))
                status = faults._take(faults.statuses, method, path)
                if status is not None:
                    faults.seen.append((method, path, status))
                    payload = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                connection.request(method, path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                if faults._take(faults.lost_answers, method, path):
                    faults.seen.append((method, path, -2))
                    connection.close()
                    self._drop()
                    return
                status, answer_headers = answer.status, answer.getheaders()
                if faults.ecr_like and method == "PATCH" and status == 202:
                    status, answer_headers = 201, faults.frozen_range(path, answer_headers)
                faults.seen.append((method, path, status))
                self.send_response(status)
                for key, value in answer_headers:
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)
                connection.close()

            def _read_body(self, length: int) -> bytes:
                if not faults.rate:
                    return self.rfile.read(length)
                pieces = []
                while length > 0:
                    piece = self.rfile.read(min(length, 256 * 1024))
                    if not piece:
                        break
                    faults.pace(len(piece))
                    pieces.append(piece)
                    length -= len(piece)
                return b"".join(pieces)

            def _drop(self) -> None:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def _forward_part(self, part: bytes) -> None:
                """Send the request line, headers (the full Content-Length) and `part` upstream, then end the
                connection there and wait until the registry has finished with it (it keeps what it received)."""
                head = f"{self.command} {self.path} HTTP/1.1\r\n" + "".join(
                    f"{key}: {value}\r\n" for key, value in self.headers.items() if key.lower() != "connection")
                with socket.create_connection(("127.0.0.1", upstream), timeout=60) as raw:
                    raw.sendall((head + "Connection: close\r\n\r\n").encode("latin-1") + part)
                    raw.shutdown(socket.SHUT_WR)
                    while raw.recv(65536):
                        pass

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
