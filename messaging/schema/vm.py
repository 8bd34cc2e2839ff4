"""VM verbs: lifecycle, devices, monitoring. vmParams is declared here once."""

from messaging.schema.types import (
    Bool,
    Enum,
    Field,
    Float,
    Int,
    ListOf,
    MapOf,
    Path,
    Size,
    Str,
    Struct,
    Uuid,
)
from messaging.schema.verbs import Verb

VM_ID = Field("vmID", Uuid(), doc="the VM's UUID")
CALL_DEADLINE = "[vm] call_timeout + the verb's hooks' budget"
JOB_ID = Field("jobID", Uuid(), required=False,
               doc="the id of the job the verb starts (default: a new UUID); see Host.getJobs")
DOWNTIME = Field("downtime", Int(min=1, max=60000), required=False,
                 doc="ms: the longest pause of the guest at the switch-over")
BANDWIDTH = Field("maxBandwidth", Int(min=0, max=1 << 30), required=False,
                  doc="MiB/s the migration may use; 0: no limit")
MIGRATION_STATUS = ("{jobID, job_type (migrate_out|migrate_in), status (pending|running|done|"
                    "failed|aborted), progress (%), description, dst?, dataRemaining?, "
                    "bandwidth? (MiB/s), iteration?, elapsed? (ms), postCopyActive?, downtime? "
                    "(ms, once done), error? {code, message}}")
SHUTDOWN_DEADLINE = CALL_DEADLINE + " + [guest_agent] shutdown_timeout"

DRIVE = Struct(
    (
        Field("path", Path(), required=False,
              doc="a regular file or block device in [vm] image_dirs, symlinks resolved, "
                  "never in the agent's own directories (or empty: no media)"),
        Field("poolID", Uuid(), required=False, doc="storage pool of the volume"),
        Field("domainID", Uuid(), required=False, doc="storage domain of the volume"),
        Field("imageID", Uuid(), required=False, doc="image of the volume"),
        Field("volumeID", Uuid(), required=False, doc="the volume"),
        Field("format", Enum(("cow", "raw")), required=False, default="raw"),
        Field("iface", Enum(("virtio", "ide", "scsi", "sata", "fdc")), required=False),
        Field("device", Enum(("disk", "cdrom", "floppy")), required=False, default="disk"),
        Field("readonly", Bool(), required=False, default=False),
        Field("serial", Str(max_len=20, pattern=r"[A-Za-z0-9_-]*"), required=False),
        Field("thresholdMiB", Size(min=1, unit=1 << 20), required=False,
              doc="thin-provisioning watermark"),
    ),
    name="drive",
)

NIC = Struct(
    (
        Field("bridge", Str(min_len=1, max_len=15, pattern=r"[A-Za-z0-9_.-]+")),
        Field("macAddr", Str(pattern=r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}"), required=False),
        Field("nicModel", Enum(("virtio", "e1000", "rtl8139")), required=False, default="virtio"),
    ),
    name="nic",
)

VM_PARAMS = Struct(
    (
        Field("vmName", Str(min_len=1, max_len=64, pattern=r"[A-Za-z0-9_.+-]+")),
        Field("memSize", Size(min=16, max=4 * 1024 * 1024, unit=1 << 20), doc="MiB"),
        Field("smp", Int(min=1, max=512), required=False, default=1),
        Field("emulator", Enum(("kvm", "qemu")), required=False, default="kvm"),
        Field("kernel", Path(min_len=1), required=False,
              doc="a regular file in [vm] image_dirs"),
        Field("initrd", Path(min_len=1), required=False,
              doc="a regular file in [vm] image_dirs"),
        Field("kernelArgs", Str(max_len=4096), required=False,
              doc="the kernel command line; no control characters"),
        Field("drives", ListOf(DRIVE, max_len=64), required=False, default=[]),
        Field("nics", ListOf(NIC, max_len=32), required=False, default=[]),
        Field("display", Enum(("vnc", "none")), required=False, default="none"),
        Field("restoreState", Str(min_len=1, max_len=4096), required=False,
              doc="a memory image written by VM.hibernate: a file in [vm] hibernation_dir, "
                  "or a volume 'sdUUID,spUUID,imgUUID,volUUID'"),
        Field("minGuaranteedMemoryMb", Size(min=0, max=4 * 1024 * 1024, unit=1 << 20),
              required=False, doc="MiB the policy's balloon never takes from the guest "
                                  "(at most memSize)"),
        Field("custom", MapOf(Str(max_len=4096), max_len=64), required=False, default={},
              doc="custom properties (names are shell identifiers); hooks get each as "
                  "$custom_<name>"),
    ),
    name="vmParams",
)

VERBS = (
    Verb(
        "VM.create",
        "Define and start a VM (or restore one from a hibernation file with restoreState).",
        params=(VM_ID, Field("vmParams", VM_PARAMS), JOB_ID),
        result="{vmID, status}; a restore answers once its job is recorded (status "
        "'Restoring state'; the job 'restore' says how it ends)",
        aliases=("create",),
        timeout=120.0,
        operation="[vm] start_timeout + the start hooks' budget",
        job="restore",
        job_if="vmParams.restoreState",
    ),
    Verb(
        "VM.destroy",
        "Power the VM off at once (if it still runs) and forget it; a VM that went Down "
        "stays listed, with its exitReason, until it is destroyed.",
        (VM_ID,),
        aliases=("destroy",),
        timeout=60.0,
        operation="[vm] destroy_timeout + the destroy hooks' budget",
    ),
    Verb("VM.pause", "Pause the guest's vCPUs.", (VM_ID,), aliases=("pause",),
         operation=CALL_DEADLINE),
    Verb("VM.cont", "Resume a paused VM.", (VM_ID,), aliases=("continue",),
         operation=CALL_DEADLINE),
    Verb("VM.reset", "Hard-reset the guest.", (VM_ID,), operation=CALL_DEADLINE),
    Verb(
        "VM.shutdown",
        "Power the guest off: through its guest agent when one answers, else (or when the "
        "agent fails) with the ACPI power button. A guest still up after delay seconds is "
        "destroyed if force, else it stays Up. With reboot, as VM.reboot.",
        (
            VM_ID,
            Field("delay", Int(min=0, max=3600), required=False, default=30),
            Field("message", Str(max_len=1024), required=False, default="",
                  doc="logged by the agent (qemu-ga shows none)"),
            Field("reboot", Bool(), required=False, default=False),
            Field("force", Bool(), required=False, default=False,
                  doc="destroy (reboot: reset) a guest that did not obey within delay"),
        ),
        aliases=("shutdown",),
        operation=SHUTDOWN_DEADLINE,
    ),
    Verb(
        "VM.setTicket",
        "Set the display (VNC) password, valid for ttl seconds (0: expired at once).",
        (VM_ID, Field("password", Str(max_len=8)), Field("ttl", Int(min=0, max=10**7))),
        aliases=("setVmTicket",),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.changeCD",
        "Insert a CD-ROM image (an empty path ejects).",
        (VM_ID, Field("path", Path(), doc="as vmParams.drives[].path")),
        aliases=("changeCD",),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.changeFloppy",
        "Insert a floppy image (an empty path ejects).",
        (VM_ID, Field("path", Path(), doc="as vmParams.drives[].path")),
        aliases=("changeFloppy",),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.hibernate",
        "Save the VM's state to hiberVolHandle (a job: answers once it is recorded); the VM "
        "ends Down (exitReason saved) and the job 'hibernate' done.",
        (VM_ID, Field("hiberVolHandle", Str(min_len=1, max_len=4096),
                      doc="a volume 'sdUUID,spUUID,imgUUID,volUUID' that no VM uses, or a new "
                          "file in [vm] hibernation_dir (created with mode 0600, never "
                          "written over an existing file)"), JOB_ID),
        aliases=("hibernate",),
        timeout=30.0,
        operation="the job: [vm] save_timeout + the hibernate hooks' budget",
        job="hibernate",
    ),
    Verb(
        "VM.migrate",
        "Live-migrate the VM to a peer's agent (a job: answers once the destination's agent "
        "answered and the job is recorded); progress streams as "
        "|virt|VM_migration_status|<vmID>; the VM ends Down (exitReason migrated) here and "
        "Up there, or stays here if the migration fails.",
        (
            VM_ID,
            Field("dst", Str(min_len=1, max_len=512, pattern=r"[A-Za-z0-9_.:/\[\]-]+"),
                  doc="a peer of [peers]: its name, or its endpoint tcp://HOST:PORT or "
                      "HOST:PORT"),
            Field("method", Enum(("online",)), required=False, default="online"),
            DOWNTIME,
            Field("timeout", Int(min=1, max=86400), required=False,
                  doc="s of migration before it is aborted (or switched to post-copy with "
                      "postCopy); default [migration] max_time_per_gib x the guest's GiB"),
            BANDWIDTH,
            Field("autoConverge", Bool(), required=False, default=False,
                  doc="throttle the guest's vCPUs when it dirties memory faster than it moves"),
            Field("postCopy", Bool(), required=False, default=False,
                  doc="at the timeout, switch to post-copy (the guest runs there and fetches "
                      "the rest) instead of aborting"),
            JOB_ID,
        ),
        result="true: the job is recorded (Host.getJobs, job_type migrate_out)",
        aliases=("migrate",),
        operation="[migration] connect_timeout (the destination's agent must answer)",
        job="migrate_out",
    ),
    Verb(
        "VM.getMigrationStatus",
        "The VM's current or last migration (either way), from its job: no actor is asked.",
        (VM_ID,),
        result=MIGRATION_STATUS,
        timeout=5.0,
    ),
    Verb(
        "VM.migrateCancel",
        "Abort the VM's outgoing migration: the VM stays on this host.",
        (VM_ID,),
        result="true: libvirt took the abort (or the migration had not started moving the "
        "guest); the job ends 'aborted'",
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.migrateChangeParams",
        "Change the limits of the VM's outgoing migration in flight.",
        (VM_ID, Field("params", Struct((DOWNTIME, BANDWIDTH), name="limits"))),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.migrationCreate",
        "(Called by the source host's agent.) Prepare an arriving VM: its actor, volumes, "
        "hooks and domain XML exist here before the guest comes; all of it goes if the "
        "migration does not arrive.",
        (
            VM_ID,
            Field("vmParams", VM_PARAMS),
            Field("xml", Str(min_len=1, max_len=1 << 20),
                  doc="the source's migratable domain XML (sanitised as a restore's)"),
            Field("jobID", Uuid(), doc="the migration's job (the same id on both hosts)"),
            Field("timeout", Int(min=1, max=86400),
                  doc="s the source gives the migration: the arrival is awaited that long "
                      "plus [migration] incoming_grace"),
            Field("prepareTimeout", Int(min=1, max=3600), required=False, default=60,
                  doc="s the source waits for this answer: the preparation's deadline"),
            Field("started", Float(min=0, max=1e11), required=False,
                  doc="POSIX time the VM started (kept across hosts)"),
        ),
        result="{vmID, status: 'Migration Destination', xml: the domain XML for libvirt}",
        timeout=30.0,
        operation="prepareTimeout",
    ),
    Verb(
        "VM.getStats",
        "Statistics of one VM.",
        (VM_ID,),
        result="list with one VM stats map: vmID, vmName, status, pauseCode?, exitReason?, "
        "exitCode?, exitMessage?, cpuUser, cpuSys, memUsage, memSize (MiB), memoryStats?, "
        "balloonInfo?, disks (by target; a thin drive also has physical, threshold and "
        "extensions), network, monitorResponse, displayInfo (list of {type, port, "
        "tlsPort, ipAddress}; empty when Down), elapsedTime? (s since qemu started), statsAge? "
        "(s since the last sample); guestAgent (unknown, responsive, unresponsive, "
        "disconnected, absent) and, once the agent answered, guestAgentVersion, guestFQDN, "
        "guestOs, guestOsInfo, username, guestUsers, netIfaces, guestIPs, disksUsage, "
        "guestTimezone, appsList",
        aliases=("getVmStats",),
        timeout=10.0,
    ),
    Verb(
        "Host.getVMList",
        "The VMs of this host.",
        (Field("fullStatus", Bool(), required=False, default=False),),
        result="list of {vmID, vmName, status} (full stats maps when fullStatus)",
        aliases=("list",),
        timeout=10.0,
    ),
    Verb(
        "Host.getAllVmStats",
        "Statistics of every VM, from the last sample (one bulk libvirt call per interval).",
        result="list of VM stats maps",
        aliases=("getAllVmStats",),
        timeout=10.0,
    ),
)

