"""A link of its own for each registry on loopback: `tc` shapes the bytes sent to each port to a rate, as a push to a
registry in another region is limited by its network path rather than by the pushing machine's CPU.

Needs root and `tc` (iproute2). It refuses to run where loopback already has a root queueing discipline (someone
else's), and removes its own on exit; after a hard kill, `tc qdisc del dev lo root` removes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess


class LinkError(RuntimeError):
    """Loopback links cannot be shaped here."""


def _tc(*args: str) -> None:
    proc = subprocess.run(["tc", *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise LinkError(f"tc {' '.join(args)} failed: {proc.stderr.strip()}")


class LoopbackLinks:
    """Traffic to each of `ports` on 127.0.0.1 limited to `megabytes_per_second` (its own link, not a shared one)."""

    def __init__(self, ports: list[int], megabytes_per_second: float) -> None:
        self.ports, self.rate = ports, megabytes_per_second
        self.installed = False

    def __enter__(self) -> "LoopbackLinks":
        if os.geteuid() != 0 or not shutil.which("tc"):
            raise LinkError("shaping loopback links needs root and tc (Debian package iproute2)")
        current = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True,
                                 check=False).stdout
        if "noqueue" not in current:
            raise LinkError(f"loopback already has a queueing discipline, left alone: {current.strip()}")
        bits = f"{int(self.rate * 8)}mbit"
        _tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1", "r2q", "1000")
        self.installed = True
        try:
            _tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "100gbit")
            for index, port in enumerate(self.ports, start=2):
                _tc("class", "add", "dev", "lo", "parent", "1:", "classid", f"1:{index}", "htb", "rate", bits,
                    "ceil", bits)
                _tc("filter", "add", "dev", "lo", "protocol", "ip", "parent", "1:", "prio", "1", "u32", "match", "ip",
                    "dport", str(port), "0xffff", "flowid", f"1:{index}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.installed:
            subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, check=False)
            self.installed = False
