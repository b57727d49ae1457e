"""Start and stop the rig's daemons by pid file, never by process name.

Each pid file also records the process start time (from /proc), so a pid the
kernel has since handed to someone else is never signalled.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Sequence


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may hold spaces, so split after its ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(taken: Collection[int] = ()) -> int:
    """A free loopback port outside the kernel's ephemeral range, and not one of `taken` (chosen for another
    part of the rig, whose server may not listen yet).

    Ports the kernel hands out for outgoing connections (etcd and API clients make many) come from the
    ephemeral range; a listening port chosen there may be taken by such a connection before its server binds.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(10000, 65535) if not low <= p <= high and p not in taken]
    for port in random.sample(candidates, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RigError("no free loopback port outside the ephemeral range")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_status(url: str, timeout: float = 3, context=None) -> int:
    """The status a plain GET gets (errors included), raising only when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_until(what: str, ready: Callable[[], bool], timeout: float, log: Path | None = None,
               alive: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RigError(f"{what} exited while starting" + _tail(log))
        try:
            if ready():
                return
        except Exception:  # not ready yet: connection refused, 5xx, ...
            pass
        time.sleep(0.3)
    raise RigError(f"{what} was not ready after {timeout:.0f}s" + _tail(log))


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n  " + "\n  ".join(text)


class RigError(RuntimeError):
    """A part of the rig could not start; the message says which and shows its log."""


@dataclass
class Daemon:
    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """Our process's pid if it still runs (same pid and same start time), else None."""
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if start_time(pid) == started else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        if (pid := self.pid()) is not None:
            return pid
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        self.pid_file.write_text(f"{proc.pid} {start_time(proc.pid)}\n")
        return proc.pid

    def stop(self, timeout: float = 15) -> bool:
        """SIGTERM, then SIGKILL after `timeout`; returns whether something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
            _reap(pid)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
                _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    """Collect our own child so it does not linger as a zombie (which /proc still lists)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
