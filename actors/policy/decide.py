"""The policy's rules: pure functions from inputs and rules to decisions (no I/O, no state).

The numbers come from the rule file (:mod:`actors.policy.rules`, defaults after MOM's
``balloon.rules`` and ``ksm.rules`` and ksmtuned's); the code is our own.

**Host memory pressure.** The host is under pressure while its free memory (MemAvailable)
is below ``[host] pressure_free_percent`` of MemTotal.

**KSM** (while the policy controls it: ``[ksm] enabled`` or ``ksmEnabled``). While free
memory is below ``[ksm] run_below_free_percent`` KSM runs and ``pages_to_scan`` grows by
``pages_boost`` at each decision (up to ``pages_max``): memory is short, merge harder. Else
it shrinks by ``pages_decay`` (down to ``pages_min``) and KSM stops. ``sleep_millisecs`` is
``sleep_ms_baseline`` per 16 GiB of host memory, at least 10 (a bigger host scans more often).
When the management layer turns control off, KSM is stopped once and then left alone.
``ksmMergeAcrossNodes`` is written when it differs from the kernel's.

**Balloons** (while ``[balloon] enabled`` or ``ballooningEnabled``), for each VM that is Up
and whose guest reports its memory (the virtio balloon driver's stats); ``cur`` is what the
guest holds now, ``free`` what it can use (MemAvailable), a step is
``max_change_percent`` of its memSize:

1. a VM below its guaranteed minimum (``minGuaranteedMemoryMb``, e.g. raised meanwhile) is
   given its guarantee at once;
2. a guest with less than ``grow_below_free_percent`` of ``cur`` free *needs memory*: it
   grows by a step (under pressure too: the memory comes from the idle guests; also while
   its balloon is still inflating toward a lower target, which it may never reach);
3. else a balloon still moving toward the last target (farther than ``min_change_percent``)
   is left alone until it got there;
4. under host pressure, a guest with more free memory than it needs shrinks by a step, but
   never below ``used + min_free_percent of cur`` (it keeps room to work) nor below its
   guarantee;
5. a change smaller than ``min_change_percent`` of memSize is not made; no target is ever
   above memSize.

Without pressure a shrunk balloon stays as it is until its guest needs memory (as MOM does:
no oscillation between giving memory back and taking it again).

**CPU** (per VM, from VM.updateVmPolicy's ``vcpuLimit``, percent of the host's CPU): each
vCPU's quota is ``period * vcpuLimit / 100 * host CPUs / vCPUs`` (MOM's cputune rule; at least
1000 µs) per ``[cpu] period_us``, set when it differs from what the policy set last.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.policy.inputs import HostInput, VmInput
from actors.policy.ksm import KsmSettings, KsmState
from actors.policy.rules import BalloonRules, CpuRules, KsmRules
from actors.vm.qos import QUOTA_MAX, QUOTA_MIN, CpuTune

GIB16_MIB = 16 * 1024


@dataclass(frozen=True)
class Decision:
    kind: str  # "ksm", "balloon", "cpu"
    vm_id: str | None
    value: object  # KsmSettings, KiB, CpuTune
    reason: str


def pressure(host: HostInput, percent: float) -> bool:
    return host.free_percent < percent


# --- KSM ---------------------------------------------------------------------------------------


def ksm(host: HostInput, rules: KsmRules, state: KsmState,
        merge_across_nodes: bool | None = None) -> Decision | None:
    """KSM's settings while the policy controls it; None when sysfs already says so."""
    free = host.free_percent
    sleep = max(10, rules.sleep_ms_baseline * GIB16_MIB // max(1, host.mem_total_mib))
    pages = state.pages_to_scan or rules.pages_min
    if free < rules.run_below_free_percent:
        wanted = KsmSettings(run=1, pages_to_scan=min(rules.pages_max, pages + rules.pages_boost),
                             sleep_millisecs=sleep)
        reason = f"host free {free:.1f}% < {rules.run_below_free_percent:g}%: run, scan more"
    else:
        wanted = KsmSettings(run=0, pages_to_scan=max(rules.pages_min,
                                                      min(pages, rules.pages_max)
                                                      - rules.pages_decay))
        reason = f"host free {free:.1f}% >= {rules.run_below_free_percent:g}%: stop"
    if merge_across_nodes is not None:
        wanted = KsmSettings(wanted.run, wanted.pages_to_scan, wanted.sleep_millisecs,
                             int(merge_across_nodes))
    changes = KsmSettings(**{k: v for k, v in wanted.items() if getattr(state, k) != v})
    if not changes.items():
        return None
    return Decision("ksm", None, changes, reason)


def ksm_stop(state: KsmState) -> Decision | None:
    """Control was turned off: stop KSM once (if it runs)."""
    if state.run == 0:
        return None
    return Decision("ksm", None, KsmSettings(run=0), "KSM control turned off: stop")


# --- balloons ------------------------------------------------------------------------------


def balloon(vm: VmInput, under_pressure: bool, rules: BalloonRules) -> Decision | None:
    """The balloon target (KiB) of one VM, or None to leave it."""
    cur, free = vm.balloon_cur, vm.guest_free
    if vm.status != "Up" or cur is None or free is None or cur <= 0 or vm.mem_mib <= 0:
        return None
    most = vm.mem_mib * 1024
    floor = vm.guaranteed_mib * 1024
    step = int(most * rules.max_change_percent / 100)
    least_change = most * rules.min_change_percent / 100
    if cur < floor:
        return Decision("balloon", vm.vm_id, floor,
                        f"{cur // 1024} MiB is below its guarantee {vm.guaranteed_mib} MiB")
    free_percent = 100.0 * free / cur
    target = vm.balloon_target
    if free_percent < rules.grow_below_free_percent:
        new = min(most, cur + step)
        reason = (f"guest free {free_percent:.0f}% < {rules.grow_below_free_percent:g}%: "
                  "needs memory")
    elif target is not None and abs(cur - target) > max(least_change, 1024):
        return None  # still moving toward the last target
    elif under_pressure:
        used = cur - free
        keep = int(used + cur * rules.min_free_percent / 100)
        new = min(cur, max(cur - step, keep, floor))
        reason = (f"host under pressure, guest free {free_percent:.0f}%: shrink (not below "
                  f"{max(keep, floor) // 1024} MiB)")
    else:
        return None
    if abs(new - cur) < max(least_change, 1):
        return None
    return Decision("balloon", vm.vm_id, int(new),
                    f"{cur // 1024} -> {int(new) // 1024} MiB: {reason}")


# --- CPU -----------------------------------------------------------------------------------


def cpu(vm: VmInput, host: HostInput, rules: CpuRules,
        applied: tuple[int, int] | None) -> Decision | None:
    """The vCPUs' quota for the VM's vcpuLimit, when it differs from what was applied."""
    limit = vm.policy.vcpu_limit
    if limit is None or vm.status not in ("Up", "Powering up", "Paused"):
        return None
    period = rules.period_us
    quota = period * limit * host.cpu_count // (100 * vm.vcpus)
    quota = max(QUOTA_MIN, min(QUOTA_MAX, quota))
    if applied == (quota, period):
        return None
    return Decision("cpu", vm.vm_id, CpuTune(quota=quota, period=period),
                    f"vcpuLimit {limit}% of {host.cpu_count} host CPUs over {vm.vcpus} "
                    f"vCPUs: quota {quota} per {period} µs")
