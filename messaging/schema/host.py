"""Host verbs: liveness, capabilities, statistics, fencing."""

from messaging.schema.types import Bool, Enum, Field, MapOf, Str
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
        "Run a fence agent (fence_<agent>) against another host's power switch.",
        params=(
            Field("addr", Str(min_len=1, max_len=255), doc="address of the fencing device"),
            Field("port", Str(max_len=64), required=False, default="", doc="plug/port"),
            Field("agent", Str(min_len=1, max_len=64, pattern=r"[a-z0-9_]+"), doc="agent name"),
            Field("username", Str(max_len=255)),
            Field("password", Str(max_len=255)),
            Field("action", Enum(("status", "on", "off", "reboot"))),
            Field("options", Str(max_len=4096), required=False, default=""),
            Field("secure", Bool(), required=False, default=False),
        ),
        result='{"power": "on"|"off"|"unknown", "operationStatus": ...}',
        aliases=("fenceNode",), implemented=False,
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
)

