"""Network namespaces and veth pairs for tests: the agent's network changes happen there,
never in the root namespace, and traffic stays between namespaces the test made.

``namespaces("h", "p")`` yields fresh namespaces (unique names: tests run in parallel) and
removes them however the test ends: every process still inside is killed first (a vdsmd,
its DHCP client, a dnsmasq), then the namespace is deleted, which deletes its links. Inside a
namespace link names are private, so tests may use fixed ones (``veth_h0``). The helpers
read the kernel with ``ip -j`` (JSON): the tests check the agent's netlink work with another
implementation. Independent of the rest of the test suite (a two-host test bed may reuse it).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_counter = itertools.count()


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


class NetNs:
    def __init__(self, name: str) -> None:
        self.name = name

    def create(self) -> NetNs:
        _run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        return self

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(self.exec_argv(argv), check=check)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", self.name, *args], check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.ip("-j", *args).stdout or "[]")

    def link(self, name: str) -> dict[str, Any] | None:
        found = self.json("-d", "link", "show")
        return next((x for x in found if x["ifname"] == name), None)

    def links(self) -> dict[str, dict[str, Any]]:
        return {x["ifname"]: x for x in self.json("-d", "link", "show")}

    def addrs(self, name: str) -> list[str]:
        """The IPv4 addresses of a link, as CIDRs."""
        found = self.json("-4", "addr", "show", "dev", name) if self.link(name) else []
        return sorted(f"{a['local']}/{a['prefixlen']}" for x in found
                      for a in x.get("addr_info", []))

    def routes(self) -> list[dict[str, Any]]:
        return list(self.json("-4", "route", "show", "table", "main"))

    def ports(self, bridge: str) -> list[str]:
        return sorted(x["ifname"] for x in self.json("link", "show", "master", bridge))

    def state(self) -> dict[str, Any]:
        """Everything a rollback must restore, as ``ip`` reports it."""
        links = {}
        for name, link in self.links().items():
            links[name] = {"kind": link.get("linkinfo", {}).get("info_kind"),
                           "mtu": link["mtu"], "master": link.get("master"),
                           "up": "UP" in link["flags"], "mac": link.get("address"),
                           "addrs": self.addrs(name)}
        routes = sorted(json.dumps(r, sort_keys=True) for r in self.routes())
        return {"links": links, "routes": routes}

    def pids(self) -> list[int]:
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    def ping(self, address: str, *, count: int = 1, timeout: float = 2.0) -> bool:
        result = self.run("busybox", "ping", "-c", str(count), "-W", str(int(timeout)),
                          address, check=False)
        return result.returncode == 0

    def delete(self) -> None:
        """Kill every process in the namespace, then delete it (and its links)."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        _run(["ip", "netns", "del", self.name], check=False)


def unique(prefix: str) -> str:
    return f"vt{prefix}-{os.getpid()}-{next(_counter)}"


@contextmanager
def namespaces(*prefixes: str) -> Iterator[list[NetNs]]:
    made: list[NetNs] = []
    try:
        for prefix in prefixes:
            made.append(NetNs(unique(prefix)).create())
        yield made
    finally:
        for ns in reversed(made):
            ns.delete()


def veth(a: NetNs, a_name: str, b: NetNs, b_name: str, *, up: bool = True) -> None:
    """A veth pair made directly inside the two namespaces (never in the root one)."""
    _run(["ip", "link", "add", a_name, "netns", a.name, "type", "veth", "peer", "name",
          b_name, "netns", b.name])
    if up:
        a.ip("link", "set", a_name, "up")
        b.ip("link", "set", b_name, "up")
