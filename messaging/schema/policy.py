"""Policy and QoS verbs (vdsm's names): KSM, the policy's switches, a VM's policy, its CPU
quota and period, and its disks' I/O limits.

A VM's network limits are set with ``VM.updateDevice`` (``deviceType: interface``, see
:mod:`messaging.schema.vmguest`), as in vdsm.
"""

from messaging.schema.types import Bool, Field, Int, ListOf, Size, Str, Struct, Uuid
from messaging.schema.verbs import Verb
from messaging.schema.vm import CALL_DEADLINE, VM_ID

#: QEMU's largest throttling value (THROTTLE_VALUE_MAX)
IO_MAX = 10**15

IO_TUNE = Struct(
    tuple(
        Field(name, Int(min=0, max=IO_MAX), required=False, default=0,
              doc="bytes/s" if "bytes" in name else "operations/s")
        for name in ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
                     "total_iops_sec", "read_iops_sec", "write_iops_sec")
    ),
    name="ioTune",
)

TUNABLE = Struct(
    (
        Field("name", Str(min_len=1, max_len=32, pattern=r"[a-z]+[0-9]*"),
              doc="the disk's target (vda, sdb, ...)"),
        Field("path", Str(max_len=4096), required=False,
              doc="the disk's source path; if given, it must be that disk's"),
        Field("maxBytes", Int(min=0, max=IO_MAX), required=False,
              doc="accepted for vdsm's clients; unused"),
        Field("ioTune", IO_TUNE),
    ),
    name="tunable",
)

VM_POLICY = Struct(
    (
        Field("vmId", Uuid(), required=False, doc="as vdsm's clients send it: must be vmID"),
        Field("vcpuLimit", Int(min=1, max=100), required=False,
              doc="percent of the host's CPU the VM's vCPUs may use together (the policy "
                  "sets their quota from it)"),
        Field("minGuaranteedMemoryMb", Size(min=0, max=4 * 1024 * 1024, unit=1 << 20),
              required=False, doc="MiB the balloon never takes the guest below (at most "
                                  "its memSize)"),
    ),
    name="policy",
)

KSM_TUNING = Struct(
    (
        Field("run", Int(min=0, max=2), required=False,
              doc="0 stops ksmd, 1 runs it, 2 stops it and unmerges every shared page"),
        Field("pages_to_scan", Int(min=1, max=100000), required=False),
        Field("sleep_millisecs", Int(min=1, max=60000), required=False),
        Field("merge_across_nodes", Int(min=0, max=1), required=False,
              doc="changes only while no page is shared (KSM then unmerges first)"),
    ),
    name="tuningParams",
)

MOM_PARAMETERS = Struct(
    (
        Field("ballooningEnabled", Bool(), required=False,
              doc="the policy moves balloons (overrides the rule file's [balloon] enabled)"),
        Field("balloonEnabled", Bool(), required=False, doc="the engine's name of the same"),
        Field("ksmEnabled", Bool(), required=False,
              doc="the policy controls KSM (overrides [ksm] enabled); off: KSM is stopped "
                  "once"),
        Field("ksmMergeAcrossNodes", Bool(), required=False,
              doc="KSM may merge pages of different NUMA nodes"),
    ),
    name="key_value_store",
)

VERBS = (
    Verb(
        "Host.setKsmTune",
        "Set KSM's knobs in /sys/kernel/mm/ksm at once (while the policy controls KSM, its "
        "next decision may change run and pages_to_scan again).",
        (Field("tuningParams", KSM_TUNING),),
        timeout=40.0,
    ),
    Verb(
        "Host.setMOMPolicyParameters",
        "Turn the policy's ballooning and KSM control on or off (until the agent restarts; "
        "the rule file says what applies then).",
        (Field("key_value_store", MOM_PARAMETERS),),
        timeout=10.0,
    ),
    Verb(
        "VM.updateVmPolicy",
        "Set the VM's policy: its CPU limit and its guaranteed memory; the policy applies "
        "them at its next decision.",
        (VM_ID, Field("params", VM_POLICY)),
        timeout=10.0,
    ),
    Verb(
        "VM.setCpuTuneQuota",
        "Set the quota of each of the VM's vCPUs: the microseconds it may run per period "
        "(-1: no limit), through libvirt's CPU tuning (the host's cgroup cpu controller).",
        (VM_ID, Field("quota", Str(min_len=1, max_len=21, pattern=r"-?[0-9]+"),
                      doc="-1, or 1000..17592186044415 (a string, as vdsm)")),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.setCpuTunePeriod",
        "Set the period of the VM's vCPU quota (microseconds).",
        (VM_ID, Field("period", Str(min_len=1, max_len=21, pattern=r"[0-9]+"),
                      doc="1000..1000000 (a string, as vdsm)")),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.setIoTune",
        "Limit the I/O of the VM's disks (QEMU's block I/O throttling, through libvirt): "
        "each tunable replaces its disk's limits (an absent value is 0: no limit; a total "
        "cannot be combined with a read or write limit of the same kind).",
        (VM_ID, Field("tunables", ListOf(TUNABLE, max_len=64))),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.getIoTune",
        "The I/O limits of the VM's disks, as libvirt has them.",
        (VM_ID,),
        result="list of {name, path, ioTune: {total_bytes_sec, read_bytes_sec, "
        "write_bytes_sec, total_iops_sec, read_iops_sec, write_iops_sec}}",
        operation=CALL_DEADLINE,
    ),
)
