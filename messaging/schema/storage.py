"""Storage verbs: connections, domains, pool, images and volumes, SPM."""

from messaging.schema.types import Enum, Field, Int, ListOf, Size, Str, Struct, Text, Uuid
from messaging.schema.verbs import Verb

SP_ID = Field("storagepoolID", Uuid(), doc="the storage pool's UUID")
SD_ID = Field("storagedomainID", Uuid(), doc="the storage domain's UUID")
IMG_ID = Field("imageID", Uuid(), doc="the image's UUID")
VOL_ID = Field("volumeID", Uuid(), doc="the volume's UUID")
SIZE = Size(min=0, max=2**63 - 1)
DOMAIN_TYPES = ("localfs", "posixfs", "nfs", "iscsi", "fcp", "loop")

CONNECTION = Struct(
    (
        Field("id", Text(min_len=1, max_len=64), doc="the caller's id of this connection"),
        Field("connection", Text(min_len=1, max_len=1024),
              doc="path, device or server:/export"),
        Field("vfs_type", Str(max_len=32, pattern=r"[a-z0-9]*"), required=False),
        Field("mnt_options", Text(max_len=1024), required=False, default=""),
        Field("nfs_version", Text(max_len=8), required=False),
        Field("nfs_timeo", Int(min=1, max=6000), required=False, doc="deciseconds"),
        Field("nfs_retrans", Int(min=0, max=100), required=False),
    ),
    name="connection",
)

LOCK_PARAMS = Struct(
    (
        Field("leaseTimeSec", Int(min=1, max=600), required=False),
        Field("ioOpTimeoutSec", Int(min=1, max=600), required=False),
        Field("leaseRetries", Int(min=1, max=100), required=False),
    ),
    name="lockParams",
)

CONNECT_PARAMS = (
    Field("storagepoolID", Uuid(), doc="the pool (or the null UUID)"),
    Field("domainType", Enum(DOMAIN_TYPES)),
    Field("connectionParams", ListOf(CONNECTION, max_len=64)),
)

VOLUME_IDS = (SP_ID, SD_ID, IMG_ID, VOL_ID)

VERBS = (
    Verb(
        "StoragePool.connectStorageServer",
        "Connect storage: mount an NFS export or a posix filesystem, or check a local dir.",
        CONNECT_PARAMS,
        result="list of {id, status, message?} (status 0 on success, else the error code of "
        "that connection and its message)",
        aliases=("connectStorageServer",),
        timeout=180.0,
    ),
    Verb(
        "StoragePool.disconnectStorageServer",
        "Undo connectStorageServer for the given connections.",
        CONNECT_PARAMS,
        result="list of {id, status, message?}",
        aliases=("disconnectStorageServer",),
        timeout=180.0,
    ),
    Verb(
        "StorageDomain.create",
        "Create a storage domain on connected storage.",
        (
            SD_ID,
            Field("domainType", Enum(DOMAIN_TYPES)),
            Field("typeArgs", Text(min_len=1, max_len=1024),
                  doc="file and loop domains: the connection string of a connected "
                  "localfs/posixfs/nfs connection; iscsi/fcp: the VG name"),
            Field("name", Text(min_len=1, max_len=64)),
            Field("domainClass", Enum(("data", "iso")), required=False, default="data"),
            Field("version", Int(min=1, max=5), required=False, default=5),
        ),
        aliases=("createStorageDomain",),
        timeout=120.0,
    ),
    Verb(
        "StorageDomain.getInfo",
        "A storage domain's metadata.",
        (SD_ID,),
        result="map: uuid, name, type, class, version, pool (list), role, generation, "
        "remotePath, master_ver, lver, spm_id",
        aliases=("getStorageDomainInfo",),
    ),
    Verb(
        "StorageDomain.getStats",
        "A storage domain's space and health.",
        (SD_ID,),
        result="map: disktotal, diskfree (bytes), monitored, and when monitored its last "
        "check as in Host.getStorageRepoStats",
        aliases=("getStorageDomainStats",),
    ),
    Verb(
        "StorageDomain.attach",
        "Attach a domain to a pool.",
        (SD_ID, SP_ID),
        result="taskID",
        aliases=("attachStorageDomain",),
    ),
    Verb(
        "StorageDomain.detach",
        "Detach a domain from its pool.",
        (SD_ID, SP_ID),
        result="taskID",
        aliases=("detachStorageDomain",),
    ),
    Verb(
        "StorageDomain.activate",
        "Activate an attached domain: it is monitored and used.",
        (SD_ID, SP_ID),
        aliases=("activateStorageDomain",),
    ),
    Verb(
        "StorageDomain.deactivate",
        "Deactivate a domain of the pool.",
        (SD_ID, SP_ID),
        aliases=("deactivateStorageDomain",),
    ),
    Verb(
        "StoragePool.create",
        "Create a pool over existing domains with a master domain.",
        (
            SP_ID,
            Field("name", Text(min_len=1, max_len=64, forbidden=",")),
            Field("masterSdUUID", Uuid()),
            Field("masterVersion", Int(min=0)),
            Field("domainList", ListOf(Uuid(), max_len=256)),
            Field("lockParams", LOCK_PARAMS, required=False),
        ),
        aliases=("createStoragePool",),
        timeout=120.0,
    ),
    Verb(
        "StoragePool.connect",
        "Connect this host to a pool: start a monitor per domain.",
        (
            SP_ID,
            Field("hostID", Int(min=1, max=2000)),
            Field("masterSdUUID", Uuid()),
            Field("masterVersion", Int(min=0)),
        ),
        aliases=("connectStoragePool",),
        timeout=120.0,
    ),
    Verb(
        "StoragePool.disconnect",
        "Disconnect this host from a pool.",
        (SP_ID, Field("hostID", Int(min=1, max=2000))),
        aliases=("disconnectStoragePool",),
        timeout=120.0,
    ),
    Verb(
        "StoragePool.getInfo",
        "The pool's metadata and its domains.",
        (SP_ID,),
        result="{info: {name, master_uuid, master_ver, domains, spm_id, lver, pool_status, "
        "spUUID, hostID}, dominfo: {sdUUID: {status, alerts, isoprefix, valid?, code?, "
        "version?}}}",
        aliases=("getStoragePoolInfo",),
    ),
    Verb(
        "StoragePool.getSpmStatus",
        "Who holds the pool's SPM role.",
        (SP_ID,),
        result="{spmStatus, spmId, spmLver}",
        aliases=("getSpmStatus",),
    ),
    Verb(
        "StoragePool.spmStart",
        "Contend for the SPM role.",
        (
            SP_ID,
            Field("prevID", Int(min=-1), required=False, default=-1),
            Field("prevLVER", Int(min=-1), required=False, default=-1),
        ),
        result="taskID",
        aliases=("spmStart",),
    ),
    Verb(
        "StoragePool.spmStop",
        "Give up the SPM role.",
        (SP_ID,),
        aliases=("spmStop",),
    ),
    Verb(
        "StoragePool.extendVolume",
        "Extend a thin volume to at least size bytes (here if SPM, else through the mailbox).",
        (*VOLUME_IDS, Field("size", SIZE)),
        aliases=("extendVolume",),
        timeout=120.0,
    ),
    Verb(
        "Volume.create",
        "Create a volume (a snapshot when srcImgUUID/srcVolUUID name a parent).",
        (
            SP_ID,
            SD_ID,
            IMG_ID,
            VOL_ID,
            Field("size", SIZE, doc="virtual size in bytes"),
            Field("volFormat", Enum(("cow", "raw"))),
            Field("preallocate", Enum(("sparse", "preallocated"))),
            Field("initialSize", SIZE, required=False, doc="allocated bytes of a thin volume"),
            Field("srcImgUUID", Uuid(), required=False),
            Field("srcVolUUID", Uuid(), required=False),
            Field("desc", Text(max_len=256), required=False, default=""),
        ),
        result="taskID",
        aliases=("createVolume",),
    ),
    Verb(
        "Volume.getInfo",
        "A volume's metadata and sizes.",
        VOLUME_IDS,
        result="map: capacity, apparentsize, truesize, format, legality, parent, ...",
        aliases=("getVolumeInfo",),
    ),
    Verb(
        "Volume.delete",
        "Delete a volume that has no children.",
        VOLUME_IDS,
        result="taskID",
        aliases=("deleteVolume",),
    ),
    Verb(
        "Image.prepare",
        "Make a volume (and its chain) ready for a VM: returns the path to use.",
        VOLUME_IDS,
        result="{path, volType (file|block), format, device, chain: [{imageID, volumeID, "
        "path}]}",
        aliases=("prepareVolume", "prepareImage"),
        timeout=60.0,
    ),
    Verb(
        "Image.teardown",
        "Undo Image.prepare (of one volume, or of every volume of the image).",
        (SP_ID, SD_ID, IMG_ID, Field("volumeID", Uuid(), required=False)),
        aliases=("teardownImage", "teardownVolume"),
        timeout=60.0,
    ),
    Verb(
        "Image.delete",
        "Delete an image and all its volumes.",
        (SP_ID, SD_ID, IMG_ID),
        result="taskID",
        aliases=("deleteImage",),
    ),
)
