"""The control channel: JSON lines over a unix socket, and the client tests use.

One request per connection: the client writes one JSON object and a newline, the server
answers one JSON object and closes. Requests (``op``): ``ping``, ``add`` (``rule``: the
fields of :class:`~tests.faultfs.rules.Rule`), ``remove`` (``id``), ``clear``, ``rules``,
``stats``. Answers carry ``ok``; a refused request has ``ok: false`` and an ``error``.
The server applies a change before it answers, so once a :class:`FaultControl` call returns,
the next filesystem operation sees it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from tests.faultfs.rules import Rule, RuleSet

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024


class ControlError(Exception):
    """The server refused a request (a bad rule) or could not be reached."""


class ControlServer:
    """Serves the control socket on daemon threads of the filesystem's process."""

    def __init__(self, path: str, rules: RuleSet) -> None:
        self.path = path
        self.rules = rules
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        os.chmod(path, 0o600)
        self._sock.listen(64)

    def serve_in_background(self) -> None:
        threading.Thread(target=self._accept, name="faultfs-control", daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self._sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                answer = self.handle(json.loads(data))
            except (OSError, ValueError, TypeError) as e:
                answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "add":
            rule_id = self.rules.add(Rule.from_wire(dict(request.get("rule") or {})))
            log.info("rule %d added: %s", rule_id, request["rule"])
            return {"ok": True, "id": rule_id}
        if op == "remove":
            found = self.rules.remove(int(request["id"]))
            return {"ok": True, "found": found}
        if op == "clear":
            count = self.rules.clear()
            log.info("cleared %d rules", count)
            return {"ok": True, "cleared": count}
        if op == "rules":
            return {"ok": True, "rules": self.rules.snapshot()}
        if op == "stats":
            return {"ok": True, "ops": dict(self.rules.ops), "blocked": self.rules.blocked()}
        raise ValueError(f"unknown op {op!r}")


class FaultControl:
    """Changes the faults of a running faultfs from the test process.

    Every method returns once the server has applied the change (the next operation on the
    mount sees it). Globs are relative to the mount point, ``fnmatch`` style (``*`` also
    matches ``/``): ``"*/dom_md/metadata"``, ``"sd/dom_md/*"``, ``"*"``.
    """

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError as e:
                raise ControlError(f"faultfs control {self.path}: {e}") from e
        if not data:
            raise ControlError(f"faultfs control {self.path}: no answer")
        answer: dict[str, Any] = json.loads(data)
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "refused"))
        return answer

    def ping(self) -> int:
        """The server's pid."""
        return int(self._request({"op": "ping"})["pid"])

    def add(self, glob: str, op: str = "any", effect: str = "eio", *, seconds: float = 0.0,
            count: int | None = None, probability: float = 1.0, errno: str = "EIO",
            pid: int | None = None, killable: bool = False) -> int:
        """Add a rule; its id. ``op``: read, write, open, fsync, stat, namespace, close, any.
        ``effect``: eio (fail with ``errno``), delay (``seconds``), hang (until cleared),
        pass (no fault: exempts what it matches from the rules added after it).
        ``pid`` limits the rule to that process and its descendants. A caller held by a delay
        or hang cannot be killed until released (as on a hung block device) unless
        ``killable``: then SIGKILL ends its held operation (EINTR) and it dies."""
        rule = {"glob": glob, "op": op, "effect": effect, "seconds": seconds, "count": count,
                "probability": probability, "errno": errno, "pid": pid, "killable": killable}
        return int(self._request({"op": "add", "rule": rule})["id"])

    def eio(self, glob: str, op: str = "any", **kw: Any) -> int:
        return self.add(glob, op, "eio", **kw)

    def delay(self, glob: str, seconds: float, op: str = "any", **kw: Any) -> int:
        return self.add(glob, op, "delay", seconds=seconds, **kw)

    def hang(self, glob: str, op: str = "any", **kw: Any) -> int:
        return self.add(glob, op, "hang", **kw)

    def remove(self, rule_id: int) -> bool:
        """Drop one rule and release the operations it holds; whether it was there."""
        return bool(self._request({"op": "remove", "id": rule_id})["found"])

    def clear(self) -> int:
        """Drop every rule and release every hang (and cut delays short) at once."""
        return int(self._request({"op": "clear"})["cleared"])

    def rules(self) -> list[dict[str, Any]]:
        """The live rules with their ``hits`` and ``blocked`` counts."""
        rules: list[dict[str, Any]] = self._request({"op": "rules"})["rules"]
        return rules

    def stats(self) -> dict[str, Any]:
        """``ops``: operations served by FUSE name; ``blocked``: held by hangs/delays now."""
        return self._request({"op": "stats"})

    def wait_blocked(self, n: int = 1, timeout: float = 30.0) -> None:
        """Wait until at least ``n`` operations are held by hangs or delays (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            blocked = int(self.stats()["blocked"])
            if blocked >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{blocked} operations blocked, wanted {n}")
            time.sleep(0.02)
