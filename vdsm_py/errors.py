"""The one exception hierarchy of vdsm_py, carrying VDSM's numeric error codes.

Domain code (virt, storage, network, host) raises these; the RPC layer turns them into
JSON-RPC errors in exactly one place (``vdsm_py.rpc.dispatch``). Nothing here knows about
the transport. Codes and default messages follow VDSM's ``vdsm.common.exception`` and
``define.py`` so that existing engines understand them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VdsmError(Exception):
    """Base of every error that is reported to a client with a VDSM code.

    ``message`` is what the client sees; keep it precise and free of tracebacks.
    ``data`` is optional structured detail (for example which parameter was wrong).
    """

    code: ClassVar[int] = 100
    default_message: ClassVar[str] = "General Exception"

    def __init__(self, message: str | None = None, *, data: Any = None) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class GeneralError(VdsmError):
    code = 100
    default_message = "General Exception"


# --- virt (VDSM define.py) -------------------------------------------------------------


class NoSuchVM(VdsmError):
    code = 1
    default_message = "Virtual machine does not exist"


class VMExists(VdsmError):
    code = 4
    default_message = "Virtual machine already exists"


class VMCreateError(VdsmError):
    code = 9
    default_message = "Error creating the requested VM"


class VMNotRunning(VdsmError):
    code = 10
    default_message = "Virtual machine is not running"


class MissingParameter(VdsmError):
    code = 11
    default_message = "Missing required parameter"


class MigrationError(VdsmError):
    code = 12
    default_message = "Fatal error during migration"


class UnexpectedError(VdsmError):
    code = 16
    default_message = "Unexpected exception"


class TicketError(VdsmError):
    code = 18
    default_message = "Error setting VM ticket"


class ResourceUnavailable(VdsmError):
    """The resource is busy (VDSM's ``unavail``): try again later."""

    code = 40
    default_message = "Resource unavailable"


class DestroyError(VdsmError):
    code = 42
    default_message = "Failed to destroy VM"


class NotImplementedVerb(VdsmError):
    code = 44
    default_message = "Not implemented"


class HotplugNicError(VdsmError):
    code = 49
    default_message = "Failed to hotplug NIC"


class HotunplugNicError(VdsmError):
    code = 50
    default_message = "Failed to hot-unplug NIC"


class HotplugDiskError(VdsmError):
    code = 45
    default_message = "Failed to hotplug disk"


class HotunplugDiskError(VdsmError):
    code = 46
    default_message = "Failed to hot-unplug disk"


class BalloonError(VdsmError):
    code = 53
    default_message = "Failed to change the balloon target"


class UpdateDeviceError(VdsmError):
    code = 56
    default_message = "Failed to update device"


class MigrationInProgress(VdsmError):
    code = 51
    default_message = "Command not supported during migration"


class InvalidParameter(VdsmError):
    code = 91
    default_message = "Invalid parameter"


class RecoveryInProgress(VdsmError):
    code = 99
    default_message = "Recovering from crash or Initializing"


class HookError(VdsmError):
    code = 1500
    default_message = "Hook error"


class CallTimeout(VdsmError):
    """A blocking call (libvirt, storage, subprocess) did not finish in time.

    Reported as VDSM's ``unavail`` so the engine retries rather than giving up.
    """

    code = 40
    default_message = "Operation timed out"


# --- storage (VDSM storage/exception.py) ------------------------------------------------


class StorageError(VdsmError):
    """Base of the storage errors (VDSM's StorageException)."""

    code = 200
    default_message = "General Storage Exception"


class VolumeDoesNotExist(StorageError):
    code = 201
    default_message = "Volume does not exist"


class VolumeIsBusy(StorageError):
    code = 203
    default_message = "Volume is busy"


class VolumeCreationError(StorageError):
    code = 205
    default_message = "Error creating a new volume"


class VolumeExtendingError(StorageError):
    code = 206
    default_message = "Error extending volume"


class VolumeMetadataReadError(StorageError):
    code = 207
    default_message = "Error while processing volume meta data"


class VolumeMetadataWriteError(StorageError):
    code = 208
    default_message = "Error while updating volume meta data"


class VolumeAlreadyExists(StorageError):
    code = 212
    default_message = "Volume already exists"


class VolumeNonWritable(StorageError):
    code = 213
    default_message = "Volume cannot be accessed to writing"


class NonLeafVolumeNotWritable(StorageError):
    code = 224
    default_message = "Volume is not a leaf: it cannot be written"


class CannotDeleteVolume(StorageError):
    code = 222
    default_message = "Cannot delete volume"


class ImagePathError(StorageError):
    code = 254
    default_message = "Image path does not exist or cannot be accessed/created"


class ImageIsNotLegalChain(StorageError):
    code = 262
    default_message = "Image is not a legal chain"


class ImageDoesNotExistInSD(StorageError):
    code = 268
    default_message = "Image does not exist in domain"


class StoragePoolCreationError(StorageError):
    code = 301
    default_message = "Error creating a storage pool"


class StoragePoolMasterNotFound(StorageError):
    code = 304
    default_message = "Cannot find master domain"


class StoragePoolUnknown(StorageError):
    code = 309
    default_message = "Unknown pool id, pool not connected"


class StoragePoolNotConnected(StorageError):
    code = 313
    default_message = "Storage pool not connected"


class StoragePoolAlreadyExists(StorageError):
    code = 316
    default_message = "Error creating a storage pool - pool already exists"


class StorageDomainCreationError(StorageError):
    code = 351
    default_message = "Error creating a storage domain"


class StorageDomainNotInPool(StorageError):
    code = 353
    default_message = "Storage domain not in pool"


class StorageDomainDoesNotExist(StorageError):
    code = 358
    default_message = "Storage domain does not exist"


class StorageDomainFSNotMounted(StorageError):
    code = 360
    default_message = "Storage domain remote path not mounted"


class StorageDomainNotEmpty(StorageError):
    code = 361
    default_message = "Storage domain is not empty"


class StorageDomainMetadataCreationError(StorageError):
    code = 362
    default_message = "Error creating a storage domain's metadata"


class StorageDomainMetadataNotFound(StorageError):
    code = 364
    default_message = "Storage domain invalid, metadata not found"


class StorageDomainAlreadyExists(StorageError):
    code = 365
    default_message = "Storage domain already exists"


class StorageDomainNotActive(StorageError):
    code = 369
    default_message = "Storage domain not active"


class StorageDomainLayoutError(StorageError):
    code = 371
    default_message = "Storage domain layout corrupted"


class StorageDomainAccessError(StorageError):
    code = 379
    default_message = "Domain is either partially accessible or entirely inaccessible"


class UnsupportedDomainVersion(StorageError):
    code = 394
    default_message = "Domain version is unsupported"


class NoSpaceLeftOnDomain(StorageError):
    code = 397
    default_message = "No space left on domain"


class StorageServerConnectionError(StorageError):
    code = 451
    default_message = "Error storage server connection"


class StorageServerValidationError(StorageError):
    code = 453
    default_message = "The specified path does not exist or cannot be used"


class StorageServerAccessPermissionError(StorageError):
    code = 469
    default_message = "Permission settings on the specified path do not allow access to the storage"


class MountError(StorageError):
    code = 477
    default_message = "Could not mount the storage"


class ImageVerificationError(StorageError):
    code = 484
    default_message = "Image verification failed"


class SpmStartError(StorageError):
    code = 650
    default_message = "Error starting SPM"


class AcquireLockFailure(StorageError):
    code = 651
    default_message = "Could not acquire resource"


class VmLeaseHeld(AcquireLockFailure):
    """A VM lease another host holds (the VM runs there); same wire code as its parent."""

    default_message = "VM lease is held by another host"


class SpmStopError(StorageError):
    code = 653
    default_message = "Error stopping SPM"


class SpmStatusError(StorageError):
    code = 654
    default_message = "Not SPM"


class ReleaseLockFailure(StorageError):
    code = 660
    default_message = "Could not release resource"


class AcquireHostIdFailure(StorageError):
    code = 661
    default_message = "Cannot acquire host id"


class ReleaseHostIdFailure(StorageError):
    code = 662
    default_message = "Cannot release host id"


class ClusterLockInitError(StorageError):
    code = 701
    default_message = "Could not initialize cluster lock"


class InvalidMetadata(StorageError):
    code = 751
    default_message = "Invalid metadata"


class MetaDataSealIsBroken(StorageError):
    code = 752
    default_message = "Meta data seal is broken (checksum mismatch)"


class NoSuchLease(StorageError):
    code = 936
    default_message = "No such lease"


# image copy / merge / domain format (images helper)


class SharedVolumeNonWritable(StorageError):
    code = 219
    default_message = "Shared volume is non-writable"


class MergeSnapshotsError(StorageError):
    code = 252
    default_message = "Error merging snapshots"


class SourceImageActionError(StorageError):
    code = 259
    default_message = "Error during source image manipulation"


class DestImageActionError(StorageError):
    code = 260
    default_message = "Error during destination image manipulation"


class CopyImageError(StorageError):
    code = 261
    default_message = "low level Image copy failed"


class StorageDomainActionError(StorageError):
    code = 350
    default_message = "Error in storage domain action"


class StorageDomainActive(StorageError):
    code = 382
    default_message = "Storage domain is active"


class CannotFormatAttachedStorageDomain(StorageError):
    code = 391
    default_message = "Cannot format attached storage domain"


class CannotFormatStorageDomainInConnectedPool(StorageError):
    code = 392
    default_message = "Cannot format storage domain in connected pool"


class WrongParentVolume(StorageError):
    code = 921
    default_message = "Wrong parent volume"


class MiscDirCleanupFailure(StorageError):
    code = 2008
    default_message = "Directory cleanup failure"

# --- SPM tasks (VDSM storage/exception.py, common/exception.py) --------------------------


class UnknownTask(VdsmError):
    code = 401
    default_message = "Task id unknown"


class TaskClearError(VdsmError):
    code = 402
    default_message = "Could not clear task"


class TaskNotFinished(VdsmError):
    code = 403
    default_message = "Task not finished"


class AddTaskError(VdsmError):
    code = 405
    default_message = "TaskManager error, unable to add task"


class TaskInProgress(VdsmError):
    code = 406
    default_message = "Running Task in progress"


class TaskMetaDataSaveError(VdsmError):
    code = 407
    default_message = "Can't save Task Metadata"


class TaskMetaDataLoadError(VdsmError):
    code = 408
    default_message = "Can't load Task Metadata"


class TaskAborted(VdsmError):
    code = 411
    default_message = "Task is aborted"


class ActionStopped(VdsmError):
    code = 443
    default_message = "Action was stopped"


def missing_parameter(name: str) -> MissingParameter:
    return MissingParameter(f"Missing required parameter: {name}", data={"param": name})


def invalid_parameter(name: str, why: str) -> InvalidParameter:
    return InvalidParameter(f"Invalid parameter: {name}: {why}", data={"param": name})


# --- network (VDSM vdsm.network.errors) ---------------------------------------------------


class NetworkError(VdsmError):
    """Base of the setupNetworks errors; the message names the network, bond or NIC."""

    code = 21
    default_message = "Bad network parameters"


class NetworkBadParams(NetworkError):
    code = 21  # ERR_BAD_PARAMS
    default_message = "Bad network parameters"


class NetworkBadAddr(NetworkError):
    code = 22  # ERR_BAD_ADDR
    default_message = "Bad network address"


class NetworkBadNic(NetworkError):
    code = 23  # ERR_BAD_NIC
    default_message = "Bad NIC"


class NetworkUsedNic(NetworkError):
    code = 24  # ERR_USED_NIC
    default_message = "NIC already in use"


class NetworkBadBonding(NetworkError):
    code = 25  # ERR_BAD_BONDING
    default_message = "Bad bonding"


class NetworkBadVlan(NetworkError):
    code = 26  # ERR_BAD_VLAN
    default_message = "Bad VLAN"


class NetworkBadBridge(NetworkError):
    code = 27  # ERR_BAD_BRIDGE
    default_message = "Bad bridge"


class NetworkUsedBridge(NetworkError):
    code = 28  # ERR_USED_BRIDGE
    default_message = "Bridge already in use"


class NetworkFailedIfup(NetworkError):
    code = 29  # ERR_FAILED_IFUP
    default_message = "Failed to bring an interface up"


class NetworkFailedIfdown(NetworkError):
    code = 30  # ERR_FAILED_IFDOWN
    default_message = "Failed to bring an interface down"


class NetworkUsedBond(NetworkError):
    code = 31  # ERR_USED_BOND
    default_message = "Bond still in use"


class NetworkLostConnection(NetworkError):
    """The client did not reach the host in time after a change (VDSM's noConPeer)."""

    code = 10  # ERR_LOST_CONNECTION
    default_message = "Connectivity check failed"
