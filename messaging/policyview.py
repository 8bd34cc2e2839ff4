"""The console's ``policy`` command: the policy actor's ``Actors.inspect`` description
(``/policy/engine``) as a person reads it: the rules in force, the switches, what the policy
saw at its last decision and what it decided, with each outcome."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

POLICY_PATH = "/policy/engine"


def _mib(kib: Any) -> str:
    return "-" if kib is None else f"{int(kib) // 1024}"


def _onoff(value: Any) -> str:
    return "on" if value else "off"


def render_policy(info: Mapping[str, Any]) -> str:
    d = info.get("detail") or {}
    rules = d.get("ruleFile") or {}
    lines = [f"policy: every {d.get('interval')} s, {d.get('decisions')} decisions, the last "
             f"{d.get('lastDecisionAgo')} s ago"]
    where = rules.get("path") or "(built-in rules)"
    lines.append(f"  rules: {where}" + (f"  ERROR: {rules['error']}" if rules.get("error")
                                          else ""))
    switches = d.get("switches") or {}
    given = ", ".join(f"{k}={v}" for k, v in switches.items() if v is not None) or "none"
    lines.append(f"  ballooning: {_onoff(d.get('ballooning'))}   KSM control: "
                 f"{_onoff(d.get('ksmControl'))}   (switches set: {given})")
    inputs = d.get("inputs") or {}
    host = inputs.get("host")
    if host:
        lines.append(f"  host: {host['memFree']} of {host['memTotal']} MiB free "
                     f"({host['freePercent']}%), under pressure: "
                     f"{'yes' if host.get('pressure') else 'no'}, {host['cpuCount']} CPUs")
    ksm = inputs.get("ksm")
    if ksm:
        lines.append(f"  KSM: {'running' if ksm.get('ksmState') else 'stopped'}, "
                     f"pages_to_scan {ksm.get('ksmPages')}, ksmd {ksm.get('ksmCpu')}% CPU, "
                     f"{ksm.get('memShared')} MiB saved")
    vms = inputs.get("vms") or {}
    if vms:
        lines.append(f"  {'VM':<24} {'STATUS':<12} {'MEM':>6} {'MIN':>5} {'BALLOON':>7} "
                     f"{'TARGET':>7} {'FREE':>6} {'CPU%':>6} {'WR/S':>10}  POLICY")
        for vm_id, vm in sorted(vms.items(), key=lambda kv: kv[1].get("name", "")):
            name = (vm.get("name") or vm_id)[:24]
            lines.append(
                f"  {name:<24} {vm.get('status', ''):<12} {vm.get('memSize', 0):>6} "
                f"{vm.get('guaranteedMb', 0):>5} {_mib(vm.get('balloonCur')):>7} "
                f"{_mib(vm.get('balloonTarget')):>7} {_mib(vm.get('guestFree')):>6} "
                f"{vm.get('cpuPercent', 0):>6} {int(vm.get('diskWriteRate', 0)):>10}  "
                f"{vm.get('policy') or ''}")
    decisions = d.get("lastDecisions") or []
    if decisions:
        names = {vm_id: vm.get("name", vm_id) for vm_id, vm in vms.items()}
        lines.append("  last decisions (newest last):")
        for r in decisions[-15:]:
            who = names.get(r.get("vmID"), r.get("vmID")) or "host"
            lines.append(f"    {r.get('ago', 0.0):>7.1f}s ago  {r['kind']:<7} {who}: "
                         f"{r['reason']}  [{r['outcome']}]")
    else:
        lines.append("  no decision made yet")
    return "\n".join(lines)
