"""Messages as Actors.inspect shows them: names and arguments, cut short, secrets masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from actors.msgtext import LINE_MAX, describe

pytestmark = pytest.mark.timeout(30)


class Target:
    def set_ticket(self, password: str, ttl: int) -> None: ...

    def submit(self, verb: str, params: dict[str, Any]) -> None: ...


class Call:
    """What a pykka proxy call message carries."""

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.attr_path = (name,)
        self.args = args
        self.kwargs = kwargs


@dataclass(frozen=True)
class Fence:
    agent: str
    options: dict[str, Any]


def test_calls_show_their_arguments_by_name_with_secrets_masked() -> None:
    assert describe(Call("set_ticket", "s3cret", 30), Target) == \
        "set_ticket(password='***', ttl=30)"
    assert describe(Call("set_ticket", password="s3cret", ttl=30), Target) == \
        "set_ticket(password='***', ttl=30)"
    text = describe(Call("submit", "Host.fenceNode",
                         {"username": "root", "password": "pw", "passwd": "x"}), Target)
    assert text.startswith("submit(verb='Host.fenceNode', params={'username': 'root', ")
    assert "pw" not in text.replace("passwd", "") and "'x'" not in text
    assert describe(Call("inspect"), Target) == "inspect()"


def test_message_objects_and_long_values() -> None:
    text = describe(Fence("apc", {"token": "abc", "ip": "192.0.2.1"}))
    assert text == "Fence(agent='apc', options={'token': '***', 'ip': '192.0.2.1'})"
    long = describe(Call("submit", "x" * 500, {}), Target)
    assert len(long) <= LINE_MAX and "..." in long
    assert describe(object()) == "object"
