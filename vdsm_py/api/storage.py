"""The storage verbs: StoragePool, StorageDomain, Volume, Image and Host's storage verbs.

Thin by design: check identifiers (UUIDs before any path is built), turn wire values into
the domain's specs, await :class:`storage.service.StorageService`, and shape the answer
with VDSM's wire names. Every verb is a coroutine: the service runs the blocking work on
the executor. Must not touch files, qemu-img or sanlock itself.
"""

from __future__ import annotations

from typing import Any

from storage import constants as sc
from storage.connections import ConnectionSpec
from storage.domain import DomainSpec
from storage.service import StorageService
from storage.validation import check_int, check_uuid
from storage.volume import VolumeSpec
from vdsm_py.errors import invalid_parameter


def _connections(domain_type: int, params: list[dict[str, Any]]) -> list[ConnectionSpec]:
    specs = []
    for i, p in enumerate(params):
        if not isinstance(p, dict) or not isinstance(p.get("connection"), str):
            raise invalid_parameter(f"connectionParams[{i}]", "needs a 'connection' string")
        specs.append(ConnectionSpec(
            id=str(p.get("id", "")), domain_type=domain_type, connection=p["connection"],
            vfs_type=str(p.get("vfs_type", "")), mnt_options=str(p.get("mnt_options", "")),
            nfs_version=str(p.get("version", "") or ""),
            timeout=check_int("timeout", p.get("timeout", 100), minimum=1),
            retrans=check_int("retrans", p.get("retrans", 3), minimum=0),
        ))
    for spec in specs:
        spec.check()
    return specs


class StoragePoolApi:
    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def connect_storage_server(self, storagepool_id: str, domain_type: int,
                                     connection_params: list[dict[str, Any]]) -> list[Any]:
        return await self.service.connect_storage_server(
            _connections(domain_type, connection_params))

    async def disconnect_storage_server(self, storagepool_id: str, domain_type: int,
                                        connection_params: list[dict[str, Any]]) -> list[Any]:
        return await self.service.disconnect_storage_server(
            _connections(domain_type, connection_params))

    async def create(self, storagepool_id: str, name: str, master_sd_uuid: str,
                     master_version: int, domain_list: list[str]) -> None:
        check_uuid("storagepoolID", storagepool_id)
        check_uuid("masterSdUUID", master_sd_uuid)
        for sd in domain_list:
            check_uuid("domainList", sd)
        await self.service.create_pool(storagepool_id, name, master_sd_uuid, domain_list,
                                       master_version)

    async def connect(self, storagepool_id: str, host_id: int, master_sd_uuid: str,
                      master_version: int) -> None:
        check_uuid("storagepoolID", storagepool_id)
        check_uuid("masterSdUUID", master_sd_uuid)
        await self.service.connect_pool(storagepool_id, host_id, master_sd_uuid, master_version)

    async def disconnect(self, storagepool_id: str, host_id: int) -> None:
        await self.service.disconnect_pool(check_uuid("storagepoolID", storagepool_id))

    async def get_info(self, storagepool_id: str) -> dict[str, Any]:
        info = await self.service.pool_call(storagepool_id, lambda p: p.info())
        return {"info": info, "dominfo": {}}

    async def spm_start(self, storagepool_id: str) -> dict[str, Any]:
        return await self.service.spm_start(check_uuid("storagepoolID", storagepool_id))

    async def spm_stop(self, storagepool_id: str) -> None:
        await self.service.spm_stop(check_uuid("storagepoolID", storagepool_id))

    async def get_spm_status(self, storagepool_id: str) -> dict[str, Any]:
        return await self.service.pool_call(storagepool_id, lambda p: p.spm_status())


class StorageDomainApi:
    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def create(self, storagedomain_id: str, domain_type: int, type_args: str, name: str,
                     domain_class: int, version: int, block_size: int) -> None:
        check_uuid("storagedomainID", storagedomain_id)
        await self.service.create_domain(DomainSpec(
            sd_uuid=storagedomain_id, name=name, storage_type=domain_type,
            remote_path=type_args, domain_class=domain_class, version=version,
            block_size=block_size))

    async def get_info(self, storagedomain_id: str) -> dict[str, Any]:
        check_uuid("storagedomainID", storagedomain_id)
        return await self.service.domain_call(storagedomain_id, lambda d: d.info())

    async def get_stats(self, storagedomain_id: str) -> dict[str, Any]:
        check_uuid("storagedomainID", storagedomain_id)
        return await self.service.domain_call(storagedomain_id, lambda d: d.stats())

    async def get_images(self, storagedomain_id: str) -> list[str]:
        check_uuid("storagedomainID", storagedomain_id)
        return await self.service.domain_call(storagedomain_id, lambda d: d.images())

    async def get_volumes(self, storagedomain_id: str, image_id: str) -> list[str]:
        check_uuid("storagedomainID", storagedomain_id)
        check_uuid("imageID", image_id)
        return await self.service.domain_call(storagedomain_id, lambda d: d.volumes(image_id))

    async def activate(self, storagedomain_id: str) -> None:
        await self.service.activate_domain(check_uuid("storagedomainID", storagedomain_id))

    async def deactivate(self, storagedomain_id: str) -> None:
        await self.service.deactivate_domain(check_uuid("storagedomainID", storagedomain_id))


def _ids(sd: str, sp: str, img: str, vol: str | None = None) -> None:
    check_uuid("storagedomainID", sd)
    check_uuid("storagepoolID", sp)
    check_uuid("imageID", img)
    if vol is not None:
        check_uuid("volumeID", vol)


class VolumeApi:
    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def create(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                     image_id: str, size: str, vol_format: int, preallocate: int,
                     disk_type: str, desc: str, src_vol_uuid: str) -> None:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        check_uuid("srcVolUUID", src_vol_uuid)
        if vol_format not in sc.VOLUME_FORMATS:
            raise invalid_parameter("volFormat", "4 (COW) or 5 (RAW)")
        if preallocate not in sc.ALLOCATIONS:
            raise invalid_parameter("preallocate", "1 (PREALLOCATED) or 2 (SPARSE)")
        spec = VolumeSpec(image_id, volume_id, check_int("size", size, minimum=1),
                          sc.VOLUME_FORMATS[vol_format], sc.ALLOCATIONS[preallocate],
                          disktype=disk_type, description=desc, parent=src_vol_uuid)
        await self.service.create_volume(storagedomain_id, storagepool_id, spec)

    async def get_info(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                       image_id: str) -> dict[str, Any]:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        return await self.service.volume_call(
            storagedomain_id, storagepool_id,
            lambda v: v.info(image_id, volume_id, storagepool_id))

    async def get_size(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                       image_id: str) -> dict[str, str]:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        return await self.service.volume_call(
            storagedomain_id, storagepool_id, lambda v: v.size(image_id, volume_id))

    async def delete(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                     image_id: str) -> None:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        await self.service.volume_call(storagedomain_id, storagepool_id,
                                       lambda v: v.delete(image_id, volume_id), write=True)

    async def extend_size(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                          image_id: str, new_size: str) -> None:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        size = check_int("newSize", new_size, minimum=1)
        await self.service.volume_call(storagedomain_id, storagepool_id,
                                       lambda v: v.extend(image_id, volume_id, size), write=True)

    async def set_legality(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                           image_id: str, legality: str) -> None:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        await self.service.volume_call(
            storagedomain_id, storagepool_id,
            lambda v: v.set_legality(image_id, volume_id, legality), write=True)


class ImageApi:
    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def prepare(self, image_id: str, storagepool_id: str, storagedomain_id: str,
                      volume_id: str) -> dict[str, Any]:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        return await self.service.image_call(storagedomain_id, storagepool_id,
                                             lambda i: i.prepare(image_id, volume_id))

    async def teardown(self, image_id: str, storagepool_id: str,
                       storagedomain_id: str) -> None:
        _ids(storagedomain_id, storagepool_id, image_id)
        await self.service.image_call(storagedomain_id, storagepool_id,
                                      lambda i: i.teardown(image_id))

    async def delete(self, image_id: str, storagepool_id: str, storagedomain_id: str) -> None:
        _ids(storagedomain_id, storagepool_id, image_id)
        await self.service.image_call(storagedomain_id, storagepool_id,
                                      lambda i: i.delete(image_id), write=True)


class HostStorageApi:
    """The ``Host`` verbs about storage (the namespace is shared with other domains)."""

    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def get_storage_domains(self) -> list[str]:
        return await self.service.list_domains()

    async def get_storage_repo_stats(self) -> dict[str, Any]:
        return self.service.repo_stats()  # from memory: cheap, on the loop


def register_all(dispatcher: Any, service: StorageService) -> None:
    """Bind every storage verb (the daemon's composition root calls this once)."""
    dispatcher.register("StoragePool", StoragePoolApi(service))
    dispatcher.register("StorageDomain", StorageDomainApi(service))
    dispatcher.register("Volume", VolumeApi(service))
    dispatcher.register("Image", ImageApi(service))
    dispatcher.register("Host", HostStorageApi(service))
