"""The vdsmd of a test-bed host: a real process in the host's namespaces.

Its API and events are served on tcp at the host's address, with CURVE, exactly as between
real hosts: the test process reaches them with its own client key (authorised on every host
of the bed) through ZeroMQ contexts made inside the host's network namespace (see
:func:`tests.testbed.netns.entered`), and the agents reach each other with their own keys,
each knowing the others as ``[peers.<name>]``. It talks to its host's own libvirtd
(``qemu:///system`` in the host's mount namespace).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from messaging.client import Client, Subscriber
from messaging.curve import ClientCurve
from tests.harness import Vdsmd, connected
from tests.testbed import netns

API_PORT = 54321
EVENTS_PORT = 54322


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """A TOML document of flat tables (dotted table names allowed)."""
    lines: list[str] = []
    for table, values in sections.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def merged(base: dict[str, dict[str, Any]],
           extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``base`` with the tables of ``extra`` merged in (extra's settings win)."""
    out = {name: dict(values) for name, values in base.items()}
    for name, values in extra.items():
        out.setdefault(name, {}).update(values)
    return out


class BedAgent(Vdsmd):
    """vdsmd on a bed host; ``client()``/``subscriber()`` connect from the host's network."""

    def __init__(self, workdir: Path, *, host: Any, config: str,
                 client_secret: Path, server_public: Path) -> None:
        super().__init__(workdir, config=config, libvirt_uri="qemu:///system")
        self.host = host
        self.api = f"tcp://{host.address}:{API_PORT}"
        self.events = f"tcp://{host.address}:{EVENTS_PORT}"
        self.curve = ClientCurve(client_secret, server_public)

    def command(self) -> list[str]:
        return list(self.host.enter_command(*super().command()))

    def client(self, timeout: float = 30.0) -> Client:
        with netns.entered(self.host.netns):
            return Client(self.api, timeout=timeout, curve=self.curve)

    def subscriber(self, *prefixes: str) -> Subscriber:
        with netns.entered(self.host.netns):
            sub = Subscriber(self.events, prefixes or ("",), curve=self.curve)
        return connected(sub)

    def close(self) -> None:
        """Stop it (SIGKILL if it does not stop in time)."""
        try:
            self.stop(timeout=30)
        finally:
            self.kill()
