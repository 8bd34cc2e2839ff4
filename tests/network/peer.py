"""A client of vdsmd running inside the peer namespace: the far side of the host's links.

``python -m tests.network.peer ENDPOINT SERVER_KEY`` reads one JSON command per line on
stdin and answers one JSON line each:

- ``{"op": "send", "tag": T, "key": SECRET, "method": M, "params": P, "timeout": S}``: call
  M on a new connection with the client key SECRET, in a thread; answers at once.
- ``{"op": "wait", "tag": T, "timeout": S}``: the outcome of call T: ``{"result": ...}``,
  ``{"error": {"code", "message"}}``, ``{"timeout": true}`` (no reply within the call's
  timeout) or ``{"pending": true}`` (still waiting after S).

The test drives it with :class:`Peer`; it lives while the test's namespace does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from messaging.client import CallTimeout, Client, ClientError
from messaging.curve import ClientCurve


def _serve(endpoint: str, server_key: str) -> None:
    outcomes: dict[str, dict[str, Any]] = {}
    done: dict[str, threading.Event] = {}

    def call(tag: str, key: str, method: str, params: dict[str, Any], timeout: float) -> None:
        try:
            with Client(endpoint, timeout=timeout,
                        curve=ClientCurve(Path(key), Path(server_key))) as c:
                outcomes[tag] = {"result": c.call(method, params)}
        except ClientError as e:
            outcomes[tag] = {"error": {"code": e.code, "message": e.message}}
        except CallTimeout:
            outcomes[tag] = {"timeout": True}
        done[tag].set()

    for line in sys.stdin:
        command = json.loads(line)
        tag = command.get("tag", "")
        if command["op"] == "send":
            done[tag] = threading.Event()
            threading.Thread(target=call, daemon=True, args=(
                tag, command["key"], command["method"], command.get("params", {}),
                command.get("timeout", 10.0))).start()
            answer: dict[str, Any] = {"sent": tag}
        elif command["op"] == "wait":
            if done[tag].wait(command.get("timeout", 30.0)):
                answer = outcomes[tag]
            else:
                answer = {"pending": True}
        else:
            answer = {"unknown": command["op"]}
        print(json.dumps(answer), flush=True)


class Peer:
    """The helper process, started in the peer namespace (``argv_prefix``)."""

    def __init__(self, argv_prefix: list[str], endpoint: str, server_key: Path,
                 top: Path) -> None:
        self.proc = subprocess.Popen(
            [*argv_prefix, sys.executable, "-m", "tests.network.peer", endpoint,
             str(server_key)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=top,
            env={"PYTHONPATH": str(top), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        self._tags = 0

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the peer client ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, key: Path, method: str, timeout: float = 10.0, **params: Any) -> str:
        self._tags += 1
        tag = f"c{self._tags}"
        self._ask({"op": "send", "tag": tag, "key": str(key), "method": method,
                   "params": params, "timeout": timeout})
        return tag

    def wait(self, tag: str, timeout: float = 30.0) -> dict[str, Any]:
        return self._ask({"op": "wait", "tag": tag, "timeout": timeout})

    def call(self, key: Path, method: str, timeout: float = 10.0, **params: Any) -> Any:
        outcome = self.wait(self.send(key, method, timeout, **params), timeout + 5)
        if "result" not in outcome:
            raise AssertionError(f"{method}: {outcome}")
        return outcome["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
