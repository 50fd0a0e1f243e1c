"""Names, sizes and enumerations of VDSM's storage layout (facts, no behaviour).

Every value here is what VDSM writes or expects on shared storage, so that a domain made by
vdsm_py is readable by VDSM and the other way round. Must not hold logic.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- domain layout -----------------------------------------------------------------------
DOMAIN_META_DATA = "dom_md"
DOMAIN_IMAGES = "images"
METADATA = "metadata"
IDS = "ids"
LEASES = "leases"
INBOX = "inbox"
OUTBOX = "outbox"
XLEASES = "xleases"
SPECIAL_VOLUMES = (METADATA, IDS, LEASES, INBOX, OUTBOX, XLEASES)
MAILBOX_SIZE = 16 * MiB  # inbox and outbox; ids/leases/xleases grow as sanlock writes
METADATA_PERMISSIONS = 0o660
FILE_VOLUME_PERMISSIONS = 0o660
META_EXT = ".meta"
LEASE_EXT = ".lease"
MOUNT_DIR = "mnt"  # <data-center root>/mnt/<mount point name>

BLANK_UUID = "00000000-0000-0000-0000-000000000000"

# --- domain metadata keys (sd.py / fileSD.py) -------------------------------------------
SHA_CKSUM_TAG = "_SHA_CKSUM"
DMDK_VERSION = "VERSION"
DMDK_SDUUID = "SDUUID"
DMDK_TYPE = "TYPE"
DMDK_ROLE = "ROLE"
DMDK_DESCRIPTION = "DESCRIPTION"
DMDK_CLASS = "CLASS"
DMDK_POOLS = "POOL_UUID"
DMDK_BLOCK_SIZE = "BLOCK_SIZE"
DMDK_ALIGNMENT = "ALIGNMENT"
DMDK_LOCK_POLICY = "LOCKPOLICY"
DMDK_LOCK_RENEWAL_INTERVAL_SEC = "LOCKRENEWALINTERVALSEC"
DMDK_LEASE_TIME_SEC = "LEASETIMESEC"
DMDK_IO_OP_TIMEOUT_SEC = "IOOPTIMEOUTSEC"
DMDK_LEASE_RETRIES = "LEASERETRIES"
REMOTE_PATH = "REMOTE_PATH"
# pool keys kept in the master domain's metadata (sp.py)
PMDK_MASTER_VERSION = "MASTER_VERSION"
PMDK_POOL_DESCRIPTION = "POOL_DESCRIPTION"
PMDK_DOMAINS = "POOL_DOMAINS"
PMDK_SPM_ID = "POOL_SPM_ID"
PMDK_LVER = "POOL_SPM_LVER"

DEFAULT_LEASE_PARAMS = {
    DMDK_LOCK_POLICY: "",
    DMDK_LOCK_RENEWAL_INTERVAL_SEC: "5",
    DMDK_LEASE_TIME_SEC: "60",
    DMDK_IO_OP_TIMEOUT_SEC: "10",
    DMDK_LEASE_RETRIES: "3",
}

MASTER_DOMAIN = "Master"
REGULAR_DOMAIN = "Regular"

DOMAIN_CLASSES = {1: "Data", 2: "Iso", 3: "Backup"}
DATA_DOMAIN = 1
DOMAIN_TYPES = {1: "NFS", 4: "LOCALFS", 6: "POSIXFS"}  # the file types we implement
NFS_DOMAIN = 1
LOCALFS_DOMAIN = 4
POSIXFS_DOMAIN = 6
SUPPORTED_VERSIONS = (5,)  # V5: ALIGNMENT/BLOCK_SIZE keys, CAP/SEQ in volume metadata
BLOCK_SIZE_512 = 512
BLOCK_SIZE_4K = 4096
ALIGNMENT_1M = MiB
SUPPORTED_BLOCK_SIZES = (BLOCK_SIZE_512, BLOCK_SIZE_4K)

# --- sanlock ------------------------------------------------------------------------------
SDM_LEASE_NAME = "SDM"  # the SPM lease resource (sanlock era)
SDM_LEASE_SLOT = 1  # offset = slot * alignment in dom_md/leases
VOLUME_LEASE_OFFSET = 0  # a volume's lease is at the start of its .lease file
MAX_HOST_ID = 250  # VDSM's hosts per lockspace on the default alignment

# --- volume metadata keys (constants.py / volumemetadata.py) ----------------------------
MD_CAPACITY = "CAP"
MD_CTIME = "CTIME"
MD_DESCRIPTION = "DESCRIPTION"
MD_DISKTYPE = "DISKTYPE"
MD_DOMAIN = "DOMAIN"
MD_FORMAT = "FORMAT"
MD_GENERATION = "GEN"
MD_IMAGE = "IMAGE"
MD_LEGALITY = "LEGALITY"
MD_PUUID = "PUUID"
MD_SEQUENCE = "SEQ"
MD_TYPE = "TYPE"
MD_VOLTYPE = "VOLTYPE"
MD_EOF = "EOF"
VOLUME_METADATA_SIZE = 512
DESCRIPTION_SIZE = 210

# volume format / allocation / role, as the wire and the metadata spell them
COW_FORMAT = "COW"
RAW_FORMAT = "RAW"
VOLUME_FORMATS = {4: COW_FORMAT, 5: RAW_FORMAT}  # wire numbers accepted by Volume.create
PREALLOCATED = "PREALLOCATED"
SPARSE = "SPARSE"
ALLOCATIONS = {1: PREALLOCATED, 2: SPARSE}
LEAF_VOL = "LEAF"
INTERNAL_VOL = "INTERNAL"
SHARED_VOL = "SHARED"
LEGAL_VOL = "LEGAL"
ILLEGAL_VOL = "ILLEGAL"
FAKE_VOL = "FAKE"
LEGALITIES = (LEGAL_VOL, ILLEGAL_VOL, FAKE_VOL)
DISK_TYPES = ("DATA", "ISOF", "MEMD", "MEMM", "OVFS", "HEVD", "HESD", "HEMD", "HECI", "SCRD", "2")
VOL_STATUS_OK = "OK"
VOL_STATUS_INVALID = "INVALID"
