"""The one exception tree of the agent.

Every error that can reach a client is a :class:`VdsmError` subclass with a wire ``code`` (see
PROTOCOL.md and docs/errors.md) and a message template filled from keyword arguments. The API
server turns a ``VdsmError`` into an error reply; any other exception escaping a verb is a bug
and becomes ``-32603`` with its traceback logged.

Errors are split into permanent ones (asking again gives the same answer) and ``retryable``
ones (a transient condition: the agent is recovering, libvirt reconnects, a domain is being
checked). Clients may retry the latter after a short delay.

The module lives in ``messaging`` because the codes are part of the wire contract; the actors
raise these classes too, so there is exactly one tree.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VdsmError(Exception):
    """Base of every error the agent reports. Subclasses set ``code`` and ``template``."""

    code: ClassVar[int] = -32603
    template: ClassVar[str] = "internal error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str | None = None, /, *, data: Any = None, **fields: Any) -> None:
        self.fields = fields
        self.data = data
        if message is None:
            try:
                message = self.template.format(**fields)
            except (KeyError, IndexError):
                message = f"{self.template} {fields!r}"
        self.message = message
        super().__init__(message)

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` member of a reply."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


# --- protocol errors (JSON-RPC-like codes) ------------------------------------------------


class ParseError(VdsmError):
    code = -32700
    template = "the frame is not valid msgpack: {reason}"


class InvalidRequest(VdsmError):
    code = -32600
    template = "invalid request: {reason}"


class MethodNotFound(VdsmError):
    code = -32601
    template = "no such method: {method}"


class InvalidParams(VdsmError):
    """A param is missing, unknown, of the wrong type or has an invalid value.

    ``param`` is the dotted path of the offending value (``vmParams.drives[0].path``); the
    message always names it.
    """

    code = -32602
    template = "invalid param {param!r}: {reason}"

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(param=param, reason=reason, data={"param": param})
        self.param = param
        self.reason = reason


class InternalError(VdsmError):
    code = -32603
    template = "internal error: {reason}"


class RequestTimeout(VdsmError):
    """The verb did not finish within its server-side timeout."""

    code = -32603
    template = "{method} did not finish within {timeout:g} s"
    retryable = True


class ServerBusy(VdsmError):
    code = -32603
    template = "the agent is overloaded ({pending} requests pending): try again shortly"
    retryable = True


# --- VM errors ------------------------------------------------------------------------


class NoSuchVM(VdsmError):
    code = 1
    template = "no such VM: {vmID}"


class VMExists(VdsmError):
    code = 4
    template = "a VM with id {vmID} already exists"


class VMError(VdsmError):
    """A VM verb failed for a reason of the VM or the hypervisor (code 5)."""

    code = 5
    template = "{reason}"


class GuestCallTimeout(VMError):
    """A libvirt call into a VM did not return in time: qemu is not responding."""

    template = "{call} on VM {vmID} did not return within {timeout:g} s: qemu is not responding"
    retryable = True


class GuestCallBusy(VMError):
    """An earlier call of the same kind is still in flight (stuck): not starting another."""

    template = (
        "{call} on VM {vmID} not started: {pending} (a {kind} call) is still running after "
        "{age:.1f} s; qemu is not responding"
    )
    retryable = True


class VMBusy(VMError):
    """Another operation on the VM is in progress (and not stuck): try again once it ends."""

    template = "VM {vmID} is busy: {operation} is in progress ({age:.1f} s); try again shortly"
    retryable = True


class GuestAgentUnavailable(VMError):
    """The VM's guest agent cannot take the call: none answers on its channel, it did not
    answer in time, or the VM is not running. It may come (back) later."""

    template = "the guest agent of VM {vmID} is {state}: {reason}"
    retryable = True


class GuestAgentError(VMError):
    """The guest agent answered, but with an error or with a reply the agent refuses (not
    what the command returns, or larger than ``[guest_agent] max_reply``)."""

    template = "guest agent command {command} on VM {vmID} failed: {reason}"


class GuestCommandFailed(VMError):
    """A command run in the guest (``guest-exec``) failed: its exit status and output."""

    template = "{verb}: `{command}` {outcome} in VM {vmID}: {output}"


class HookError(VdsmError):
    code = 6
    template = "hook {hook} failed: {reason}"


class Recovering(VdsmError):
    code = 100
    template = "the agent is recovering after a restart: try again shortly"
    retryable = True


class LibvirtUnavailable(VdsmError):
    code = 101
    template = "libvirt is not connected ({reason}): the agent reconnects by itself"
    retryable = True


class ActorUnavailable(VdsmError):
    code = 102
    template = "the service {path} is not running ({reason})"
    retryable = True


class NoSuchActor(VdsmError):
    code = 103
    template = "no actor at {path}"


class Forbidden(VdsmError):
    code = 104
    template = "{what} is disabled on this host ({how})"


class NotAuthorized(VdsmError):
    """A CURVE client whose key was removed from the authorised keys while connected."""

    code = 105
    template = "client key {key} is not authorised on this host"


class NotImplementedOnHost(VdsmError):
    code = -32601
    template = "{method} is declared but not implemented on this host"


# --- storage errors (200-299) -----------------------------------------------------------


class StorageError(VdsmError):
    code = 200
    template = "storage error: {reason}"


class NoSuchStorageDomain(StorageError):
    code = 201
    template = "no such storage domain: {sdUUID}"


class NoSuchStoragePool(StorageError):
    code = 202
    template = "no such storage pool: {spUUID}"


class NoSuchImage(StorageError):
    code = 203
    template = "no such image: {imgUUID} in domain {sdUUID}"


class NoSuchVolume(StorageError):
    code = 204
    template = "no such volume: {volUUID} in image {imgUUID} of domain {sdUUID}"


class StorageDomainExists(StorageError):
    code = 205
    template = "storage domain {sdUUID} already exists"


class VolumeExists(StorageError):
    code = 206
    template = "volume {volUUID} already exists in image {imgUUID}"


class StoragePoolExists(StorageError):
    code = 207
    template = "storage pool {spUUID} already exists"


class StorageDomainInvalid(StorageError):
    code = 208
    template = "storage domain {sdUUID} is not valid: {reason}"
    retryable = True


class NotSPM(StorageError):
    code = 209
    template = "this host is not the SPM of pool {spUUID}"


class StorageConnectionError(StorageError):
    code = 210
    template = "cannot connect {connection}: {reason}"


class NoSpace(StorageError):
    code = 211
    template = "not enough space in {where}: {reason}"


class StorageCommandError(StorageError):
    code = 212
    template = "{command} failed (exit {rc}): {reason}"


class StorageDomainNotAttached(StorageError):
    code = 213
    template = "storage domain {sdUUID} is not attached to pool {spUUID}"


class StoragePoolNotConnected(StorageError):
    code = 214
    template = "storage pool {spUUID} is not connected"


class StorageTimeout(StorageError):
    code = 215
    template = "storage did not answer within {timeout:g} s: {reason}"
    retryable = True


class LeaseError(StorageError):
    code = 216
    template = "lease {lease}: {reason}"


class VolumeHasChildren(StorageError):
    code = 217
    template = "volume {volUUID} has children ({children}): delete them first"


class VolumeInUse(StorageError):
    code = 218
    template = "volume {volUUID} is in use ({reason})"


class VolumeIllegal(StorageError):
    code = 219
    template = "volume {volUUID} is not legal ({legality}): {reason}"


class MetadataConflict(StorageError):
    code = 220
    template = "metadata of {what} changed meanwhile (generation {found}, expected {expected})"
    retryable = True


class StorageNotSupported(StorageError):
    code = 221
    template = "not supported on this host: {reason}"


class IncorrectVolumeFormat(StorageError):
    code = 222
    template = "{reason}"


class ImageInUse(StorageError):
    code = 223
    template = "image {imgUUID} is in use: {reason}"


class StorageBusy(StorageError):
    """Earlier operations on the same storage are still running (stuck on a hung mount?)."""

    code = 224
    template = ("{what} has {pending} operation(s) still running (the oldest for {age:.0f} s): "
                "try again later")
    retryable = True


class StorageDomainAttached(StorageError):
    code = 225
    template = "storage domain {sdUUID} is attached to pool {spUUID}"


class StorageDomainNotActive(StorageError):
    code = 227
    template = "storage domain {sdUUID} is not active in pool {spUUID} ({status})"


class WrongMasterVersion(StorageError):
    code = 226
    template = "master domain {sdUUID} of pool {spUUID} is at version {found}, not {expected}"


# --- network errors (300-399) -----------------------------------------------------------


class NetworkError(VdsmError):
    code = 300
    template = "network configuration error: {reason}"


class UnknownNic(NetworkError):
    code = 301
    template = "{owner}: no such NIC on this host: {nic}"


class NicInUse(NetworkError):
    code = 302
    template = "NIC {nic} is used by {users}"


class BadNetworkAddress(NetworkError):
    code = 303
    template = "network {network}: {reason}"


class BadBonding(NetworkError):
    code = 304
    template = "bond {bond}: {reason}"


class BadMtu(NetworkError):
    code = 305
    template = "{owner}: MTU {mtu} is outside what {device} takes ({low}-{high})"


class LinkKindUnsupported(NetworkError):
    code = 306
    template = ("{owner} needs a {kind} link, and this kernel cannot create {kind} links "
                "({reason}): nothing was changed")


class NoSuchNetwork(NetworkError):
    code = 307
    template = "no such network: {network}"


class NetworkNameInUse(NetworkError):
    code = 308
    template = "{owner}: a link named {name} exists and is not one this agent made"


class NetworkApplyFailed(NetworkError):
    code = 309
    template = ("applying the network change failed at {step}: {reason}; the previous "
                "configuration was restored")


class NetworkRollbackFailed(NetworkError):
    code = 310
    template = ("the network change failed ({reason}) and the previous configuration could "
                "not be restored exactly: {detail}")


class ConnectivityLost(NetworkError):
    code = 311
    template = ("no client confirmed connectivity within {timeout} s after the network "
                "change: it was rolled back")


class NetworkBusy(NetworkError):
    code = 312
    template = "{pending} network changes are already waiting: try again later"
    retryable = True


class DhcpFailed(NetworkError):
    code = 313
    template = "network {network}: no DHCP lease on {device} within {timeout} s"


class NetworkExists(NetworkError):
    code = 314
    template = "network {network} already exists"


class BadVlan(NetworkError):
    code = 315
    template = "network {network}: {reason}"


# --- fencing errors (500-509) -----------------------------------------------------------


class FenceError(VdsmError):
    """Host.fenceNode could not fence: the agent failed, hung, or cannot run here."""

    code = 500
    template = "fencing error: {reason}"


class FenceAgentFailed(FenceError):
    """The fence agent ran and failed (its exit status and what it said; never the
    password)."""

    code = 501
    template = "fence_{agent} {action} of {target} failed (exit {rc}): {reason}"


class FenceTimeout(FenceError):
    code = 502
    template = ("fence_{agent} {action} of {target} did not finish within {timeout:g} s: "
                "it was killed; the power state is unknown")
    retryable = True


class FenceAgentUnusable(FenceError):
    """A known agent that this host cannot run (not installed, or not root's own file)."""

    code = 503
    template = "fence agent {path} cannot be used: {reason}"


class FenceBusy(FenceError):
    code = 504
    template = "{reason}: try again once it has finished"
    retryable = True


# --- host registration errors (600-619) -------------------------------------------------


class RegistrationError(VdsmError):
    """vdsm-tool register, and the engine side of the registration protocol
    (docs/registration.md): the codes travel in the protocol's replies."""

    code = 600
    template = "registration failed: {reason}"


class RegistrationRefused(RegistrationError):
    code = 601
    template = "the engine at {engine} refused the registration: {reason}"


class RegistrationPending(RegistrationError):
    code = 602
    template = ("the engine at {engine} has not approved host {host} yet: run vdsm-tool "
                "register again once it has")
    retryable = True


class EngineKeyMismatch(RegistrationError):
    code = 603
    template = ("the engine at {engine} presents key fingerprint {got}, not {expected}: "
                "nothing was changed")


class BadRegistrationMessage(RegistrationError):
    code = 604
    template = "bad registration message: {reason}"


class EngineUnreachable(RegistrationError):
    code = 605
    template = "the engine at {engine} did not answer within {timeout:g} s"
    retryable = True


class HostNotConfigured(RegistrationError):
    code = 610
    template = "this host is not configured: {reason} (run vdsm-tool configure)"


# --- task errors (400-499) --------------------------------------------------------------


class TaskError(VdsmError):
    code = 400
    template = "task error: {reason}"


class NoSuchTask(TaskError):
    code = 401
    template = "no such task: {taskID}"


class TaskNotFinished(TaskError):
    code = 402
    template = "task {taskID} is not finished (state {state})"


class TaskStateError(TaskError):
    code = 403
    template = "task {taskID} cannot {action} in state {state}"


class TaskAborted(TaskError):
    code = 404
    template = "task {taskID} was aborted: {reason}"


def _subclasses(cls: type[VdsmError]) -> list[type[VdsmError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def error_from_wire(error: Any) -> VdsmError:
    """The error another agent process sent (its ``code``, ``message``, ``data``), as an
    instance of the class that owns the code here (the message is kept as it was)."""
    if not isinstance(error, dict):
        return InternalError(reason=f"malformed error reply {error!r:.200}")
    code = error.get("code", -32603)
    message = str(error.get("message", ""))
    cls: type[VdsmError] = VdsmError
    for candidate in _subclasses(VdsmError):
        if candidate.code == code:
            cls = candidate
            break
    made = cls(message, data=error.get("data"))
    if made.code != code:  # an unknown code: keep it as it came
        made.code = code  # type: ignore[misc]
    return made
