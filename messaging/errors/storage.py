"""Storage errors (codes 200-299)."""

from __future__ import annotations

from messaging.errors.base import VdsmError


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
