"""Typed actor proxies (actors.directory.typed_proxy): mypy checks every call made through
an actor's proxy, and the typed proxy is the real pykka proxy at run time."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pykka
import pytest
from pykka.typing import proxy_method

from actors.base import InspectProxy
from actors.directory import typed_proxy
from actors.host import proxies as host_proxies
from actors.policy import proxies as policy_proxies
from actors.storage import proxies as storage_proxies
from actors.supervisor import SupervisorProxy
from actors.vm import proxies as vm_proxies

ROOT = Path(__file__).resolve().parents[2]
PROXY_CLASSES = [InspectProxy, SupervisorProxy,
                 *(cls for module in (vm_proxies, storage_proxies, host_proxies, policy_proxies)
                   for _, cls in inspect.getmembers(module, inspect.isclass)
                   if cls.__module__ == module.__name__)]


class Counter(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def add(self, amount: int, *, times: int = 1) -> int:
        self.total += amount * times
        return self.total


class CounterProxy:
    add = proxy_method(Counter.add)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("stop_all_actors")
def test_a_typed_proxy_is_the_actors_proxy_at_run_time() -> None:
    ref = Counter.start()
    counter = typed_proxy(ref, CounterProxy)
    assert counter.add(2).get(timeout=5) == 2
    assert counter.add(3, times=2).get(timeout=5) == 8
    assert isinstance(counter, pykka.ActorProxy)  # a cast, not a wrapper


def test_every_typed_proxy_names_methods_of_its_actor() -> None:
    assert len(PROXY_CLASSES) >= 10
    for cls in PROXY_CLASSES:
        methods = {n: v for n, v in vars(cls).items() if callable(v)}
        assert methods, cls
        for name, function in methods.items():
            # proxy_method only casts: the attribute is the actor's own function
            assert function.__name__ == name, (cls, name)
            assert function.__qualname__.split(".")[-2].endswith(("Actor", "Manager",
                                                                   "Supervisor")), function


def test_no_untyped_proxy_outside_the_directory() -> None:
    """Every proxy call in the agent goes through typed_proxy (or ServiceRef.proxy(kind)):
    a bare ``ref.proxy()`` is ``Any`` to mypy, so nothing at that seam would be checked."""
    bare = []
    for path in sorted((ROOT / "actors").rglob("*.py")):
        if path == ROOT / "actors" / "directory.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "proxy" and not node.args and not node.keywords):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bare == []


MISUSES = """\
from __future__ import annotations

from typing import Any

import pykka

from actors.directory import typed_proxy
from actors.storage.handle import ImageHandle
from actors.storage.proxies import DomainsProxy, PoolProxy
from actors.storage.taskrequest import DeleteImage
from actors.vm.proxies import VmProxy


def misuse(ref: pykka.ActorRef[Any], sp: str, sd: str, img: str) -> None:
    vm = typed_proxy(ref, VmProxy)
    vm.shutdown("now", 5)  # error: wrong argument types
    vm.set_ticket("pw")  # error: ttl missing
    vm.pasue()  # error: no such method
    answer: bool = vm.pause().get()  # error: a future of the operation, not a bool
    typed_proxy(ref, DomainsProxy).prepare("sd", "img")  # error: arguments missing
    typed_proxy(ref, PoolProxy).check_domain("sd", active="yes")  # error: not a bool
    typed_proxy(ref, PoolProxy).record.get().host_id.upper()  # error: host_id is an int
    typed_proxy(ref, PoolProxy).submit("Volume.delete", {})  # error: a task record, not a dict
    typed_proxy(ref, VmProxy).set_ticket("pw", 10).get().result(5)
    typed_proxy(ref, PoolProxy).record.get().sp_uuid.upper()
    typed_proxy(ref, PoolProxy).submit(DeleteImage(ImageHandle(sp, sd, img))).get().result(5)
"""


@pytest.mark.timeout(300)
def test_mypy_refuses_misuse_of_the_typed_proxies(tmp_path: Path) -> None:
    """What a bare proxy let through (all ``Any``), mypy now finds, line by line."""
    snippet = tmp_path / "misuse.py"
    snippet.write_text(MISUSES)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", str(ROOT / "pyproject.toml"), str(snippet)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    flagged = {int(line.split(":")[1]) for line in result.stdout.splitlines()
               if line.startswith(str(snippet)) and ": error:" in line}
    expected = {n for n, line in enumerate(MISUSES.splitlines(), 1) if "# error" in line}
    assert len(expected) == 8
    assert flagged == expected, textwrap.indent(result.stdout, "  ")
