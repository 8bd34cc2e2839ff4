"""The QoS checks made before any actor is asked, and how the live XML names disks and NICs
(actors/vm/qos.py); tests/vm/test_api_qos.py runs the verbs on real guests."""

from __future__ import annotations

from typing import Any

import pytest

from actors.vm import domxml, qos
from actors.vm.params import VmParams
from messaging.errors import InvalidParams
from tests.vm.helpers import VM_ID, raw_params, validated


def refused(call: Any) -> InvalidParams:
    with pytest.raises(InvalidParams) as e:
        call()
    return e.value


def test_quota_and_period_are_libvirts_ranges() -> None:
    assert qos.parse_quota("-1") == -1
    assert qos.parse_quota("1000") == 1000
    assert qos.parse_quota(str(qos.QUOTA_MAX)) == qos.QUOTA_MAX
    for bad in ("0", "999", "-2", str(qos.QUOTA_MAX + 1), "99999999999999999999"):
        assert refused(lambda b=bad: qos.parse_quota(b)).fields["param"] == "quota"
    assert qos.parse_period("100000") == 100000
    for bad in ("0", "999", "1000001"):
        assert refused(lambda b=bad: qos.parse_period(b)).fields["param"] == "period"


def tunable(name: str = "vda", **io: int) -> dict[str, Any]:
    return {"name": name, "ioTune": io}


def test_io_tune_checks() -> None:
    tunes = qos.check_io_tune([tunable(write_bytes_sec=1 << 20), tunable("vdb",
                                                                           total_iops_sec=50)])
    assert tunes[0].limits == {"total_bytes_sec": 0, "read_bytes_sec": 0,
                               "write_bytes_sec": 1 << 20, "total_iops_sec": 0,
                               "read_iops_sec": 0, "write_iops_sec": 0}
    assert tunes[1].name == "vdb" and tunes[1].limits["total_iops_sec"] == 50
    mixed = refused(lambda: qos.check_io_tune([tunable(total_bytes_sec=1, read_bytes_sec=2)]))
    assert mixed.fields["param"] == "tunables[0].ioTune.total_bytes_sec"
    mixed = refused(lambda: qos.check_io_tune([tunable(total_iops_sec=1, write_iops_sec=2)]))
    assert mixed.fields["param"] == "tunables[0].ioTune.total_iops_sec"
    twice = refused(lambda: qos.check_io_tune([tunable(), tunable()]))
    assert twice.fields["param"] == "tunables[1].name"


def test_bandwidth_checks() -> None:
    assert qos.check_bandwidth({"inbound": {"average": 100}}) == {
        "inbound": {"average": 100, "peak": 0, "burst": 0}}
    both = qos.check_bandwidth({"inbound": {"average": 0},
                                "outbound": {"average": 10, "peak": 20, "burst": 5}})
    assert both["outbound"] == {"average": 10, "peak": 20, "burst": 5}
    assert refused(lambda: qos.check_bandwidth({})).fields["param"] == "params.specParams"
    low = refused(lambda: qos.check_bandwidth({"outbound": {"average": 10, "peak": 5}}))
    assert low.fields["param"] == "params.specParams.outbound.peak"
    lone = refused(lambda: qos.check_bandwidth({"inbound": {"average": 0, "burst": 5}}))
    assert lone.fields["param"] == "params.specParams.inbound.average"


def test_the_live_xml_names_disks_and_nics() -> None:
    params = VmParams.from_dict(VM_ID, validated(raw_params(
        drives=[{"path": "/images/a.img"}, {"path": "/images/b.iso", "device": "cdrom"},
                {"path": "/images/c.img", "iface": "scsi"}],
        nics=[{"bridge": "br0", "macAddr": "52:54:00:AA:BB:CC"}, {"bridge": "br1"}])))
    xml = domxml.build_domain_xml(params, serial_log="/tmp/serial.log")
    assert qos._disks(xml) == {"vda": "/images/a.img", "sda": "/images/c.img"}  # no CD-ROM
    assert qos._nics(xml) == {"52:54:00:aa:bb:cc": ""}  # libvirt picks the other MAC
