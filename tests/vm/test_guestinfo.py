"""The guest agent's replies as the stats show them: real replies of qemu-ga 7.2 (recorded
from the test guest) and hostile ones, each bounded or refused."""

from __future__ import annotations

from typing import Any

import pytest

from actors.vm import guestinfo
from actors.vm.guestinfo import BadReply

# Recorded from qemu-ga 7.2 in the test guest (tests/guestfiles.py).
OSINFO = {"name": "vdsm test guest", "kernel-release": "6.1.0-57-cloud-amd64",
          "version": "1 (busybox)", "pretty-name": "vdsm test guest 1", "version-id": "1",
          "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3", "machine": "x86_64",
          "id": "vdsm-test-guest"}
INTERFACES = [{"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
    {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
    {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}]},
    {"name": "eth0", "hardware-address": "52:54:00:12:34:56", "ip-addresses": [
        {"ip-address-type": "ipv4", "ip-address": "192.0.2.7", "prefix": 24},
        {"ip-address-type": "ipv6", "ip-address": "2001:db8::7", "prefix": 64}]}]
FSINFO = [{"name": "vda", "total-bytes": 24116224, "mountpoint": "/mnt", "disk": [],
           "used-bytes": 14336, "type": "ext4"},
          {"name": "sr0", "mountpoint": "/media", "type": "iso9660", "disk": []}]


@pytest.mark.timeout(5)
def test_real_replies_become_vdsm_stats() -> None:
    assert guestinfo.host_name({"host-name": "vdsm-guest"}) == {"guestFQDN": "vdsm-guest"}
    os_stats = guestinfo.os_info(OSINFO)
    assert os_stats["guestOs"] == "6.1.0-57-cloud-amd64"
    assert os_stats["guestOsInfo"] == {
        "type": "linux", "arch": "x86_64", "kernel": "6.1.0-57-cloud-amd64",
        "distribution": "vdsm test guest", "version": "1", "codename": "",
        "prettyName": "vdsm test guest 1"}
    assert guestinfo.users([{"login-time": 1700000000, "user": "alice"},
                            {"login-time": 1.5, "user": "bob", "domain": "CORP"}]) == {
        "username": "alice, bob@CORP",
        "guestUsers": [{"name": "alice", "domain": "", "loginTime": 1700000000.0},
                       {"name": "bob", "domain": "CORP", "loginTime": 1.5}]}
    nets = guestinfo.interfaces(INTERFACES)
    assert nets["guestIPs"] == "192.0.2.7 2001:db8::7"  # loopback left out
    assert nets["netIfaces"][1] == {"name": "eth0", "hw": "52:54:00:12:34:56",
                                    "inet": ["192.0.2.7"], "inet6": ["2001:db8::7"]}
    assert guestinfo.filesystems(FSINFO) == {"disksUsage": [
        {"path": "/mnt", "fs": "ext4", "total": 24116224, "used": 14336}]}
    assert guestinfo.timezone({"zone": "CET", "offset": 3600}) == {
        "guestTimezone": {"zone": "CET", "offset": 60}}
    version, enabled = guestinfo.agent_info({"version": "7.2.22", "supported_commands": [
        {"name": "guest-exec", "enabled": True}, {"name": "guest-fstrim", "enabled": False}]})
    assert (version, enabled) == ("7.2.22", frozenset({"guest-exec"}))


@pytest.mark.timeout(5)
def test_the_package_list_is_text_and_filtered() -> None:
    listing = b"kernel-5.14.0-1\nbash-5.1\n\n  qemu-guest-agent-7.2  \n"
    assert guestinfo.apps(listing)["appsList"] == ["kernel-5.14.0-1", "bash-5.1",
                                                   "qemu-guest-agent-7.2"]
    assert guestinfo.apps(listing, ("kernel-*", "qemu-guest-agent-*"))["appsList"] == [
        "kernel-5.14.0-1", "qemu-guest-agent-7.2"]
    with pytest.raises(BadReply, match="not UTF-8"):
        guestinfo.apps(b"ok-1\n\xff\xfe\x00binary")
    with pytest.raises(BadReply, match="more than 1000"):
        guestinfo.apps(b"".join(b"pkg-%d\n" % i for i in range(1001)))
    # Many lines are fine when the filter leaves few.
    assert guestinfo.apps(b"".join(b"pkg-%d\n" % i for i in range(5000)), ("pkg-7",)) == {
        "appsList": ["pkg-7"]}
    with pytest.raises(BadReply, match="longer than 256"):
        guestinfo.apps(b"x" * 300)
    # Control characters (an escape sequence for whoever prints the stats) are masked.
    assert guestinfo.apps(b"evil-\x1b[2J1\x07\n")["appsList"] == ["evil-?[2J1?"]


HOSTILE: list[tuple[Any, Any, str]] = [
    (guestinfo.host_name, {"host-name": "h" * 257}, "longer than 256"),
    (guestinfo.host_name, {"host-name": 42}, "not text"),
    (guestinfo.host_name, ["not", "an", "object"], "not an object"),
    (guestinfo.users, [{"user": "u", "login-time": 1}] * 65, "more than 64"),
    (guestinfo.users, [{"user": "u", "login-time": "yesterday"}], "not a number"),
    (guestinfo.users, {"user": "u"}, "not a list"),
    (guestinfo.interfaces, [{"name": "e", "ip-addresses": [
        {"ip-address": "300.1.1.1"}]}], "not an IP address"),
    (guestinfo.interfaces, [{"name": "e", "hardware-address": "<script>"}], "not a MAC"),
    (guestinfo.interfaces, [{"name": "e", "ip-addresses": [
        {"ip-address": "10.0.0.1"}] * 33}], "more than 32"),
    (guestinfo.interfaces, [{"name": "e"}] * 65, "more than 64"),
    (guestinfo.filesystems, [{"mountpoint": "/", "type": "xfs", "total-bytes": -1,
                              "used-bytes": 0}], "not a count"),
    (guestinfo.filesystems, [{"mountpoint": "/", "type": "xfs", "total-bytes": 2**64,
                              "used-bytes": 0}], "not a count"),
    (guestinfo.filesystems, [{"mountpoint": "/", "type": "xfs", "total-bytes": True,
                              "used-bytes": 0}], "not a count"),
    (guestinfo.timezone, {"zone": "X", "offset": 10**9}, "not a number of seconds"),
    (guestinfo.os_info, {"kernel-release": ["nested", {"deep": []}]}, "not text"),
]


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("parse", "reply", "reason"), HOSTILE)
def test_hostile_replies_are_refused(parse: Any, reply: Any, reason: str) -> None:
    with pytest.raises(BadReply, match=reason):
        parse(reply)


@pytest.mark.timeout(5)
def test_text_from_the_guest_is_one_printable_line() -> None:
    stats = guestinfo.host_name({"host-name": "bad\nname\x00\x1b]0;title\x07\u2028x"})
    assert stats == {"guestFQDN": "bad?name??]0;title??x"}
