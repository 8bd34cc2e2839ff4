"""A stopped (SIGSTOPped) libvirtd, against a real vdsmd and a private libvirtd with guests.

What broke before: libvirt's client keepalive closed the connection while several calls
(abandoned bulk stats, VM calls, host verbs) were still in flight on it; libvirt then never
delivered the close callback (the agent answered -32603 forever and never reconnected), and
when libvirtd was continued the process died of SIGSEGV inside an abandoned
``getAllDomainStats``. And every API worker could be held by verbs waiting on the stalled
libvirtd, so that even board reads went unanswered.

libvirtd is always continued (SIGCONT) in a ``finally``; its guests are destroyed with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from messaging.client import CallTimeout, ClientError
from messaging.schema import SCHEMA
from tests.harness import Vdsmd, next_event, running_vdsmd, wait_for
from tests.vm import agent as a

pytestmark = [pytest.mark.libvirt, pytest.mark.root]

CONFIG = """\
[libvirt]
reconnect_max = 0.5
[vm]
powering_up = 1.0
call_timeout = 3.0
stats_interval = 0.5
stats_timeout = 1.0
"""


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[a.GuestLibvirtd]:
    private = a.GuestLibvirtd(tmp_path / "libvirt")
    try:
        private.start()
        yield private
    finally:
        private.close()


def libvirtd_pid(private: a.GuestLibvirtd) -> int:
    return int((private.workdir / "libvirtd.pid").read_text().strip())


@contextlib.contextmanager
def stopped_libvirtd(private: a.GuestLibvirtd) -> Iterator[None]:
    """SIGSTOP the private libvirtd for the block; SIGCONT it in any case."""
    pid = libvirtd_pid(private)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def start_vms(vdsmd: Vdsmd, count: int) -> list[str]:
    ids = [a.new_id() for _ in range(count)]
    for vm_id in ids:
        vdsmd.call("VM.create", vmID=vm_id, vmParams=a.bare_params())
    for vm_id in ids:
        a.wait_status(vdsmd, vm_id, "Up")
    return ids


def background_calls(vdsmd: Vdsmd, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Fire each call on a thread of its own; returns the threads (their answers are not
    needed: they get stuck in the stalled libvirtd)."""
    def call(method: str, params: dict[str, Any]) -> None:
        with contextlib.suppress(ClientError, CallTimeout):
            vdsmd.call(method, timeout=90, **params)

    threads = [threading.Thread(target=call, args=c, daemon=True) for c in calls]
    for thread in threads:
        thread.start()
    return threads


def control_calls(vdsmd: Vdsmd, vm_id: str) -> list[Any]:
    detail = vdsmd.call("Actors.inspect", path=f"/vms/{vm_id}")["detail"]
    return [c for c in detail["calls"]["inFlight"] if c["kind"] == "control"]


def settle_vms(vdsmd: Vdsmd, ids: list[str]) -> None:
    """Every VM Up again: a pause that was stuck in libvirtd may have gone through (the
    resumed libvirtd works off its backlog: wait until the abandoned calls returned, or the
    next control verb is refused with GuestCallBusy)."""
    for vm_id in ids:
        wait_for(lambda v=vm_id: not control_calls(vdsmd, v), 60,
                 what="the abandoned control calls to return")
        wait_for(lambda v=vm_id: a.status(vdsmd, v)["status"] in ("Up", "Paused"), 30)
        if a.status(vdsmd, vm_id)["status"] == "Paused":
            assert vdsmd.call("VM.cont", vmID=vm_id) is True
        a.wait_status(vdsmd, vm_id, "Up")


def libvirt_detail(vdsmd: Vdsmd) -> dict[str, Any]:
    detail: dict[str, Any] = vdsmd.call("Actors.inspect", path="/host/libvirt")["detail"]
    return detail


def code_of(call: Any) -> int | None:
    try:
        call()
    except ClientError as e:
        return e.code
    return None


@pytest.mark.timeout(300)
def test_a_stopped_libvirtd_is_survived_and_reconnected(
    tmp_path: Path, libvirtd: a.GuestLibvirtd
) -> None:
    with running_vdsmd(tmp_path / "d", libvirt_uri=libvirtd.uri, config=CONFIG) as vdsmd, \
            vdsmd.subscriber("|host|libvirt|") as sub:
        a.wait_ready(vdsmd)
        ids = start_vms(vdsmd, 3)
        pid = vdsmd.pid
        with stopped_libvirtd(libvirtd):
            # Calls that get stuck in libvirtd on several threads at once: host verbs, VM
            # verbs (their GuestCaller threads) and the sampler's bulk stats calls.
            background_calls(vdsmd, [("Host.getCapabilities", {})] * 3
                             + [("VM.pause", {"vmID": ids[0]}), ("VM.cont", {"vmID": ids[1]})])
            _, down = next_event(sub, lambda _t, p: p["connected"] is False, 40)
            assert down["reason"]
            # While libvirtd does not answer, verbs that need it say so at once (101)...
            with vdsmd.client(timeout=10) as client:
                wait_for(lambda: code_of(lambda: client.call("Host.getCapabilities")) == 101,
                         30, what="Host.getCapabilities to answer 101")
                # ...and everything that does not need it answers.
                assert client.call("Host.ping") is True
                assert {s["vmID"] for s in client.call("Host.getAllVmStats")} == set(ids)
                assert "cpuIdle" in client.call("Host.getStats")
            # Stopped long enough that the connection is given up: it is retired (not
            # closed under its calls in flight) and the agent tries to reconnect.
            wait_for(lambda: libvirt_detail(vdsmd)["retired"], 60,
                     what="the stalled connection to be retired")
            # A new connection is being opened: it hangs too, on its own thread.
            wait_for(lambda: libvirt_detail(vdsmd)["connecting"], 30,
                     what="a reconnect attempt")
        # libvirtd continues: its answers reach the calls abandoned on the old connection.
        next_event(sub, lambda _t, p: p["connected"] is True, 60)
        assert vdsmd.proc is not None and vdsmd.proc.poll() is None, vdsmd.log()
        assert vdsmd.pid == pid
        wait_for(lambda: code_of(lambda: vdsmd.call("Host.getCapabilities")) is None, 30,
                 what="Host.getCapabilities to answer again")
        # The retired connection is closed once its last call has returned.
        wait_for(lambda: not libvirt_detail(vdsmd)["retired"], 60,
                 what="the retired connection to be closed")
        listed = {v["vmID"]: v["status"] for v in vdsmd.call("Host.getVMList")}
        assert set(listed) == set(ids)
        # A VM.pause that was stuck in libvirtd went through once it was continued.
        settle_vms(vdsmd, ids)
        # The VMs are driven again through the new connection.
        assert vdsmd.call("VM.pause", vmID=ids[2]) is True
        assert a.status(vdsmd, ids[2])["status"] == "Paused"
        assert vdsmd.call("VM.cont", vmID=ids[2]) is True
        assert vdsmd.proc.poll() is None
        libvirt_actor = next(x for x in vdsmd.call("Actors.list") if x["path"] == "/host/libvirt")
        assert libvirt_actor["restarts"] == 0


def timed_call(vdsmd: Vdsmd, method: str, **params: Any) -> Any:
    """``method``'s answer, waited for no longer than its deadline (the schema's timeout)
    plus a little: a hung or starved verb fails the test (CallTimeout), and so does the
    server's own timeout reply (-32603)."""
    timeout = SCHEMA.lookup(method).timeout + 2.0
    with vdsmd.client(timeout=timeout) as client:
        return client.call(method, params)


@pytest.mark.timeout(300)
def test_a_libvirtd_stall_starves_no_worker_and_no_board_read(
    tmp_path: Path, libvirtd: a.GuestLibvirtd
) -> None:
    config = CONFIG + "[api]\nworkers = 4\n"
    with running_vdsmd(tmp_path / "d", libvirt_uri=libvirtd.uri, config=config) as vdsmd:
        a.wait_ready(vdsmd)
        ids = start_vms(vdsmd, 2)
        outcomes: list[Any] = []

        def caps() -> None:
            started = time.monotonic()
            try:
                vdsmd.call("Host.getCapabilities", timeout=90)
                outcomes.append(("ok", time.monotonic() - started))
            except ClientError as e:
                outcomes.append((e.code, time.monotonic() - started))
            except CallTimeout:
                outcomes.append(("no answer", time.monotonic() - started))

        with stopped_libvirtd(libvirtd):
            # Many more libvirt-bound requests than API workers, all at once, before the
            # stall is noticed; and VM verbs that get stuck in libvirtd too.
            threads = [threading.Thread(target=caps, daemon=True) for _ in range(24)]
            for thread in threads:
                thread.start()
            background_calls(vdsmd, [("VM.pause", {"vmID": v}) for v in ids] * 3)
            # Board reads, ping and worker-bound verbs that do not need libvirt answer.
            for _ in range(3):
                assert timed_call(vdsmd, "Host.ping") is True
                assert {s["vmID"] for s in timed_call(vdsmd, "Host.getAllVmStats")} == set(ids)
                assert {v["vmID"] for v in timed_call(vdsmd, "Host.getVMList")} == set(ids)
                assert timed_call(vdsmd, "VM.getStats", vmID=ids[0])[0]["vmID"] == ids[0]
                assert "cpuIdle" in timed_call(vdsmd, "Host.getStats")
                assert timed_call(vdsmd, "Actors.inspect", path="/host/libvirt")["answering"]
                assert timed_call(vdsmd, "Host.getDeviceList") is not None
            # Every getCapabilities got its answer within its deadline: 101, libvirt is not
            # answering (not a timeout of the request, not silence).
            budget = SCHEMA.lookup("Host.getCapabilities").timeout + 2.0
            for thread in threads:
                thread.join(budget + 10)
            assert len(outcomes) == len(threads)
            assert {code for code, _ in outcomes} == {101}, outcomes
            assert max(took for _, took in outcomes) < budget, outcomes
        # libvirtd continues: everything recovers.
        wait_for(lambda: code_of(lambda: vdsmd.call("Host.getCapabilities")) is None, 60,
                 what="Host.getCapabilities to answer again")
        settle_vms(vdsmd, ids)
        assert vdsmd.call("VM.pause", vmID=ids[0]) is True
        assert vdsmd.call("VM.cont", vmID=ids[0]) is True
