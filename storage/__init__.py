"""Storage domain package of vdsm_py: file storage domains in VDSM's on-disk layout.

Owns connections to storage servers, storage domains (layout, metadata with checksum),
images and volumes (through the qemu-img adapter), sanlock lockspaces and leases, the
domain monitor and the pool/SPM role. Entry point for the daemon:
:class:`storage.service.StorageService`. Must not import the transport or RPC layers;
the thin verbs live in ``vdsm_py.api.storage``.
"""
