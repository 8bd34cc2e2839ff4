"""The desktop verbs' commands: argument lists filled once with checked values; the password
only on stdin."""

from __future__ import annotations

import dataclasses

import pytest

from actors.config import ConfigError, GuestAgentConfig
from actors.vm import desktop
from messaging.errors import Forbidden, InvalidParams

CONFIG = GuestAgentConfig(desktop_login=("/usr/libexec/login", "--domain={domain}",
                                         "{username}"))


@pytest.mark.timeout(5)
def test_values_fill_placeholders_once_and_stay_one_argument() -> None:
    command = desktop.login(CONFIG, "{username}", "bob; rm -rf / $(id) `id`", "pw")
    assert command.argv == ("/usr/libexec/login", "--domain={username}",
                            "bob; rm -rf / $(id) `id`")
    assert command.stdin == b"pw\n"
    logoff = desktop.logoff(CONFIG, "carol {domain}")
    assert logoff.argv == ("loginctl", "terminate-user", "carol {domain}")
    assert desktop.logoff(CONFIG, "").argv == ("loginctl", "terminate-seat", "seat0")
    assert desktop.lock(CONFIG).argv == ("loginctl", "lock-sessions")


@pytest.mark.timeout(5)
def test_the_password_is_never_shown() -> None:
    command = desktop.login(CONFIG, "corp", "bob", "hunter2")
    assert "hunter2" not in command.shown
    assert "hunter2" not in repr(command)
    assert command.shown == "/usr/libexec/login --domain=corp bob"


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("domain", "username", "param"), [
    ("corp", "-rf", "username"), ("--help", "bob", "domain"), ("corp", "--", "username")])
def test_values_that_look_like_options_are_refused(domain: str, username: str,
                                                   param: str) -> None:
    with pytest.raises(InvalidParams) as refused:
        desktop.login(CONFIG, domain, username, "pw")
    assert refused.value.param == param
    with pytest.raises(InvalidParams):
        desktop.logoff(CONFIG, "-x")


@pytest.mark.timeout(5)
def test_an_empty_command_disables_its_verb() -> None:
    with pytest.raises(Forbidden, match="desktop_login is empty"):
        desktop.login(GuestAgentConfig(), "corp", "bob", "pw")
    off = dataclasses.replace(GuestAgentConfig(), desktop_lock=())
    with pytest.raises(Forbidden, match=r"VM\.desktopLock"):
        desktop.lock(off)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("setting", "value", "reason"), [
    ("desktop_login", ("login", "{password}"), "{password} is not one of"),
    ("desktop_lock", ("lock", "{username}"), "{username} is not one of"),
    ("desktop_logoff_user", ("", "{username}"), "the program is empty"),
    ("apps_command", ("",), "the program is empty"),
])
def test_the_config_refuses_what_would_leak_or_not_run(setting: str, value: tuple[str, ...],
                                                       reason: str) -> None:
    with pytest.raises(ConfigError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        GuestAgentConfig(**{setting: value})  # type: ignore[arg-type]


@pytest.mark.timeout(5)
def test_the_package_query_keeps_its_own_braces() -> None:
    # rpm's query format is not a placeholder of ours.
    assert "%{NAME}" in " ".join(GuestAgentConfig().apps_command)
