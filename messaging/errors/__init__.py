"""The one exception tree of the agent.

Every error that can reach a client is a :class:`VdsmError` subclass with a wire ``code`` (see
PROTOCOL.md; docs/api.md has the table) and a message template filled from keyword arguments.
The API server turns a ``VdsmError`` into an error reply; any other exception escaping a verb
is a bug and becomes ``-32603`` with its traceback logged.

Errors are split into permanent ones (asking again gives the same answer) and ``retryable``
ones (a transient condition: the agent is recovering, libvirt reconnects, a domain is being
checked). Clients may retry the latter after a short delay.

The module lives in ``messaging`` because the codes are part of the wire contract; the actors
raise these classes too, so there is exactly one tree.

One module per code range, re-exported here (import the names from ``messaging.errors``):
``base`` (:class:`VdsmError`), ``protocol`` (-32700 to -32600), ``vm`` (1-99), ``agent``
(100-199), ``storage`` (200-299), ``network`` (300-399), ``tasks`` (400-499), ``fencing``
(500-509), ``registration`` (600-619); ``wire`` rebuilds an error another agent process sent.
"""

from __future__ import annotations

from messaging.errors.agent import (
    ActorUnavailable,
    Forbidden,
    HostSettingError,
    LibvirtUnavailable,
    NoSuchActor,
    NotAuthorized,
    Recovering,
)
from messaging.errors.base import VdsmError
from messaging.errors.fencing import (
    FenceAgentFailed,
    FenceAgentUnusable,
    FenceBusy,
    FenceError,
    FenceTimeout,
)
from messaging.errors.network import (
    BadBonding,
    BadMtu,
    BadNetworkAddress,
    BadVlan,
    ConnectivityLost,
    DhcpFailed,
    LinkKindUnsupported,
    NetworkApplyFailed,
    NetworkBusy,
    NetworkError,
    NetworkExists,
    NetworkNameInUse,
    NetworkRollbackFailed,
    NicInUse,
    NoSuchNetwork,
    UnknownNic,
)
from messaging.errors.protocol import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotImplementedOnHost,
    ParseError,
    RequestTimeout,
    ServerBusy,
)
from messaging.errors.registration import (
    BadRegistrationMessage,
    EngineKeyMismatch,
    EngineUnreachable,
    HostNotConfigured,
    RegistrationError,
    RegistrationPending,
    RegistrationRefused,
)
from messaging.errors.storage import (
    ImageInUse,
    IncorrectVolumeFormat,
    LeaseError,
    MetadataConflict,
    NoSpace,
    NoSuchImage,
    NoSuchStorageDomain,
    NoSuchStoragePool,
    NoSuchVolume,
    NotSPM,
    StorageBusy,
    StorageCommandError,
    StorageConnectionError,
    StorageDomainAttached,
    StorageDomainExists,
    StorageDomainInvalid,
    StorageDomainNotActive,
    StorageDomainNotAttached,
    StorageError,
    StorageNotSupported,
    StoragePoolExists,
    StoragePoolNotConnected,
    StorageTimeout,
    VolumeExists,
    VolumeHasChildren,
    VolumeIllegal,
    VolumeInUse,
    WrongMasterVersion,
)
from messaging.errors.tasks import (
    NoSuchTask,
    TaskAborted,
    TaskError,
    TaskNotFinished,
    TaskStateError,
)
from messaging.errors.vm import (
    GuestAgentError,
    GuestAgentUnavailable,
    GuestCallBusy,
    GuestCallTimeout,
    GuestCommandFailed,
    HookError,
    MigrationError,
    MigrationLimit,
    MigrationNotInProgress,
    NoSuchVM,
    PeerError,
    PeerUnreachable,
    VMBusy,
    VMError,
    VMExists,
)
from messaging.errors.wire import error_from_wire

__all__ = [
    "ActorUnavailable", "BadBonding", "BadMtu", "BadNetworkAddress", "BadRegistrationMessage",
    "BadVlan", "ConnectivityLost", "DhcpFailed", "EngineKeyMismatch", "EngineUnreachable",
    "FenceAgentFailed", "FenceAgentUnusable", "FenceBusy", "FenceError", "FenceTimeout",
    "Forbidden", "GuestAgentError", "GuestAgentUnavailable", "GuestCallBusy",
    "GuestCallTimeout", "GuestCommandFailed", "HookError", "HostNotConfigured",
    "HostSettingError", "ImageInUse", "IncorrectVolumeFormat", "InternalError",
    "InvalidParams", "InvalidRequest", "LeaseError", "LibvirtUnavailable",
    "LinkKindUnsupported", "MetadataConflict", "MethodNotFound", "MigrationError",
    "MigrationLimit", "MigrationNotInProgress", "NetworkApplyFailed", "NetworkBusy",
    "NetworkError", "NetworkExists", "NetworkNameInUse", "NetworkRollbackFailed", "NicInUse",
    "NoSpace", "NoSuchActor", "NoSuchImage", "NoSuchNetwork", "NoSuchStorageDomain",
    "NoSuchStoragePool", "NoSuchTask", "NoSuchVM", "NoSuchVolume", "NotAuthorized",
    "NotImplementedOnHost", "NotSPM", "ParseError", "PeerError", "PeerUnreachable",
    "Recovering", "RegistrationError", "RegistrationPending", "RegistrationRefused",
    "RequestTimeout", "ServerBusy", "StorageBusy", "StorageCommandError",
    "StorageConnectionError", "StorageDomainAttached", "StorageDomainExists",
    "StorageDomainInvalid", "StorageDomainNotActive", "StorageDomainNotAttached",
    "StorageError", "StorageNotSupported", "StoragePoolExists", "StoragePoolNotConnected",
    "StorageTimeout", "TaskAborted", "TaskError", "TaskNotFinished", "TaskStateError",
    "UnknownNic", "VMBusy", "VMError", "VMExists", "VdsmError", "VolumeExists",
    "VolumeHasChildren", "VolumeIllegal", "VolumeInUse", "WrongMasterVersion",
    "error_from_wire",
]
