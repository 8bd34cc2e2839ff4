"""Host verbs: liveness, capabilities, statistics, fencing."""

from messaging.schema.types import Bool, Enum, Field, Int, ListOf, MapOf, Str, Struct, Uuid
from messaging.schema.verbs import Verb

VERBS = (
    Verb(
        "Host.ping",
        "Liveness check: answers true as long as the API server runs.",
        aliases=("ping",),
        timeout=5.0,
    ),
    Verb(
        "Host.getCapabilities",
        "What this host is, as libvirt and the kernel see it.",
        result="map: hostUUID, cpuCores, cpuSockets, cpuThreads, cpuModel, cpuFlags, memSize "
        "(MiB), kvmEnabled, emulators, libvirtVersion, qemuVersion, kernelVersion, networks, "
        "bridges, nics, version",
        aliases=("getVdsCapabilities",),
    ),
    Verb(
        "Host.getStats",
        "Recent host statistics, from the last sample (no I/O on the request path).",
        result="map: cpuUser, cpuSys, cpuIdle (percent), cpuLoad, memFree, memUsed, memTotal "
        "(MiB), network {nic: {rxRate, txRate, rxBytes, txBytes, state, speed}}, vmCount, "
        "vmActive, storageDomains, elapsedTime (s since the agent started), sampleTime "
        "(when the sample was taken: monotonic s, the clock of events' notify_time), "
        "sampleInterval (s between samples), statsAge (s since the sample); where the host "
        "has KSM: ksmState (running), ksmPages (pages_to_scan), ksmCpu (percent of the "
        "host's CPU ksmd used), memShared (MiB saved by sharing), ksmShared, ksmSharing "
        "(pages)",
        aliases=("getVdsStats",),
    ),
    Verb(
        "Host.fenceNode",
        "Run a fence agent (Debian's fence_<agent>) against another host's management "
        "controller (IPMI, iLO, DRAC, ...): report or switch its power. With a policy, an "
        "on/off/reboot is skipped while the target still renews its host id on storage.",
        params=(
            Field("addr", Str(min_len=1, max_len=255), doc="address of the fencing device"),
            Field("port", Str(max_len=5), required=False, default="",
                  doc="the device's TCP/UDP port (ipport), empty for the agent's default"),
            Field("agent", Str(min_len=1, max_len=64),
                  doc="agent name as in fence_<agent> (ipmilan, ilo4, drac5, ...): one of "
                  "[fencing] agents"),
            Field("username", Str(max_len=255)),
            Field("password", Str(max_len=255), doc="goes to the agent on its stdin only"),
            Field("action", Enum(("status", "on", "off", "reboot"))),
            Field("options", Str(max_len=4096), required=False, default="",
                  doc="key=value items (newline- or comma-separated) from an allow-list: "
                  "lanplus, power_timeout, plug, ..."),
            Field("secure", Bool(), required=False, default=False, doc="ssh for the agents "
                  "that can use it"),
            Field("policy", Struct((
                Field("storageDomainHostIdMap", MapOf(Int(min=1, max=2000), max_len=256),
                      doc="{sdUUID: the target's host id}"),
            ), name="fencing policy"), required=False,
                doc="skip on/off/reboot when the target renews its host id on one of these "
                "domains"),
        ),
        result='{"power": "on"|"off"|"unknown", "operationStatus": "done" (status) | '
        '"initiated" (on/off/reboot accepted by the agent) | "skipped" (policy), "message", '
        '"policy"? (why it was skipped)}',
        aliases=("fenceNode",),
        timeout=120.0,
    ),
    Verb(
        "Host.getDeviceList",
        "Block devices of this host, from udev.",
        params=(
            Field(
                "storageType",
                Str(max_len=32),
                required=False,
                doc="accepted for compatibility; all block devices are listed",
            ),
            Field("guids", MapOf(Bool()), required=False, doc="unused, compatibility"),
        ),
        result="list of {GUID, devname, capacity, vendor, productID, serial, pvUUID?, "
        "vgUUID?, status, devtype}",
        aliases=("getDeviceList",),
    ),
    Verb(
        "Host.getHardwareInfo",
        "System manufacturer, product, serial and UUID as DMI reports them.",
        result="map",
    ),
    Verb(
        "Host.getStorageRepoStats",
        "The last result of every storage domain monitor; never does I/O itself.",
        params=(
            Field(
                "domains",
                Str(max_len=0),
                required=False,
                doc="unused placeholder kept for vdsm compatibility",
            ),
        ),
        result="{sdUUID: {code, lastCheck, delay, valid, version, acquired}}",
        aliases=("repoStats",),
        timeout=5.0,
    ),
    Verb(
        "Host.getJobs",
        "This host's jobs (VM.migrate on both hosts, VM.hibernate, restores): running ones "
        "and those that ended within [jobs] keep_finished. Storage tasks are listed by "
        "Host.getAllTasksStatuses; both publish |jobs|status|<id>.",
        params=(
            Field("job_type", Enum(("migrate_out", "migrate_in", "hibernate", "restore")),
                  required=False, doc="only jobs of this kind"),
            Field("job_ids", ListOf(Uuid(), max_len=1024), required=False,
                  doc="only these jobs"),
        ),
        result="{jobID: {id, job_type, vmID, status (pending|running|done|failed|aborted), "
        "progress, description, startTime, endTime?, error? {code, message}, and by kind: "
        "dst, timeout, maxDowntime, maxBandwidth, dataRemaining, bandwidth, downtime; "
        "a hibernation's or restore's bytesDone and bytesTotal of its memory image...}}",
        timeout=5.0,
    ),
)
