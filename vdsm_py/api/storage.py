"""The storage verbs: StoragePool, StorageDomain, Volume, Image and Host's storage verbs.

Thin by design: check identifiers (UUIDs before any path is built), turn wire values into
the domain's specs, await :class:`storage.service.StorageService`, and shape the answer
with VDSM's wire names. Every verb is a coroutine: the service runs the blocking work on
the executor. Must not touch files, qemu-img or sanlock itself.
"""

from __future__ import annotations

from typing import Any

from storage import constants as sc
from storage import image_copy, image_merge
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

    async def format(self, storagedomain_id: str, auto_detach: bool = False) -> None:
        await self.service.format_domain(check_uuid("storagedomainID", storagedomain_id),
                                         bool(auto_detach))


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
                     disk_type: str, desc: str, src_vol_uuid: str) -> str:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        check_uuid("srcVolUUID", src_vol_uuid)
        if vol_format not in sc.VOLUME_FORMATS:
            raise invalid_parameter("volFormat", "4 (COW) or 5 (RAW)")
        if preallocate not in sc.ALLOCATIONS:
            raise invalid_parameter("preallocate", "1 (PREALLOCATED) or 2 (SPARSE)")
        spec = VolumeSpec(image_id, volume_id, check_int("size", size, minimum=1),
                          sc.VOLUME_FORMATS[vol_format], sc.ALLOCATIONS[preallocate],
                          disktype=disk_type, description=desc, parent=src_vol_uuid)
        return await self.service.volume_task(storagedomain_id, storagepool_id, "createVolume",
                                              lambda v: v.create_plan(spec), image_id)

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
                     image_id: str) -> str:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        return await self.service.volume_task(
            storagedomain_id, storagepool_id, "deleteVolume",
            lambda v: v.delete_plan(image_id, volume_id), image_id)

    async def extend_size(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                          image_id: str, new_size: str) -> str:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        size = check_int("newSize", new_size, minimum=1)
        return await self.service.volume_task(
            storagedomain_id, storagepool_id, "extendVolumeSize",
            lambda v: v.extend_plan(image_id, volume_id, size), image_id)

    async def set_legality(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                           image_id: str, legality: str) -> None:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        await self.service.volume_call(
            storagedomain_id, storagepool_id,
            lambda v: v.set_legality(image_id, volume_id, legality), write=True)

    async def copy(self, volume_id: str, storagepool_id: str, storagedomain_id: str,
                   image_id: str, dst_sd_uuid: str, dst_img_uuid: str, dst_vol_uuid: str,
                   desc: str = "", vol_type: int = 6, vol_format: int = 0,
                   preallocate: int = 0, post_zero: bool = False, force: bool = False,
                   discard: bool = False) -> str:
        _ids(storagedomain_id, storagepool_id, image_id, volume_id)
        check_uuid("dstSdUUID", dst_sd_uuid)
        check_uuid("dstImgUUID", dst_img_uuid)
        check_uuid("dstVolUUID", dst_vol_uuid)
        if vol_type not in VOLUME_ROLES:
            raise invalid_parameter("volType", "6 (SHARED, a template) or 8 (LEAF)")
        if vol_format not in (0, *sc.VOLUME_FORMATS):
            raise invalid_parameter("volFormat", "0 (as the source), 4 (COW) or 5 (RAW)")
        if preallocate not in (0, *sc.ALLOCATIONS):
            raise invalid_parameter("preallocate", "0 (as the source), 1 or 2")
        dst_sd = storagedomain_id if dst_sd_uuid == sc.BLANK_UUID else dst_sd_uuid
        return await self.service.image_task(
            storagedomain_id, storagepool_id, dst_sd, "copyImage",
            lambda src, dst: image_copy.copy_collapsed_plan(
                src, image_id, volume_id, dst, dst_img_uuid, dst_vol_uuid, description=desc,
                vol_type=VOLUME_ROLES[vol_type], vol_format=sc.VOLUME_FORMATS.get(vol_format),
                allocation=sc.ALLOCATIONS.get(preallocate), force=bool(force)),
            [f"{storagedomain_id}/{image_id}", f"{dst_sd}/{dst_img_uuid}"])


VOLUME_ROLES = {6: sc.SHARED_VOL, 8: sc.LEAF_VOL}  # VDSM's volType numbers


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

    async def clone_structure(self, image_id: str, storagepool_id: str,
                              storagedomain_id: str, dst_sd_uuid: str) -> str:
        _ids(storagedomain_id, storagepool_id, image_id)
        check_uuid("dstSdUUID", dst_sd_uuid)
        return await self.service.image_task(
            storagedomain_id, storagepool_id, dst_sd_uuid, "cloneImageStructure",
            lambda src, dst: image_copy.clone_structure_plan(src, image_id, dst.volumes),
            [f"{storagedomain_id}/{image_id}", f"{dst_sd_uuid}/{image_id}"])

    async def move(self, image_id: str, storagepool_id: str, storagedomain_id: str,
                   dst_sd_uuid: str, operation: int, post_zero: bool = False,
                   force: bool = False, discard: bool = False) -> str:
        _ids(storagedomain_id, storagepool_id, image_id)
        check_uuid("dstSdUUID", dst_sd_uuid)
        if operation not in (image_copy.COPY_OP, image_copy.MOVE_OP):
            raise invalid_parameter("operation", "1 (COPY) or 2 (MOVE)")
        return await self.service.image_task(
            storagedomain_id, storagepool_id, dst_sd_uuid, "moveImage",
            lambda src, dst: image_copy.copy_image_plan(src, image_id, dst, operation=operation,
                                                        force=bool(force)),
            [f"{storagedomain_id}/{image_id}", f"{dst_sd_uuid}/{image_id}"])

    async def merge(self, image_id: str, storagepool_id: str, storagedomain_id: str,
                    base_vol_uuid: str, top_vol_uuid: str) -> str:
        _ids(storagedomain_id, storagepool_id, image_id, base_vol_uuid)
        check_uuid("topVolUUID", top_vol_uuid)
        return await self.service.image_task(
            storagedomain_id, storagepool_id, storagedomain_id, "mergeSnapshots",
            lambda images, _same: image_merge.merge_plan(images, image_id, base_vol_uuid,
                                                         top_vol_uuid),
            [f"{storagedomain_id}/{image_id}"])


class HostStorageApi:
    """The ``Host`` verbs about storage (the namespace is shared with other domains)."""

    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def get_storage_domains(self) -> list[str]:
        return await self.service.list_domains()

    async def get_storage_repo_stats(self) -> dict[str, Any]:
        return self.service.repo_stats()  # from memory: cheap, on the loop

    async def get_all_tasks_statuses(self) -> dict[str, Any]:
        return self.service.all_tasks(lambda m: m.all_statuses())

    async def get_all_tasks_info(self) -> dict[str, Any]:
        return self.service.all_tasks(lambda m: m.all_info())


class TaskApi:
    """The SPM's tasks (answered from memory, except clear which removes the records)."""

    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def get_status(self, task_id: str) -> dict[str, Any]:
        return self.service.task_call(task_id, lambda m: m.status(task_id))

    async def get_info(self, task_id: str) -> dict[str, str]:
        return self.service.task_call(task_id, lambda m: m.info(task_id))

    async def stop(self, task_id: str) -> None:
        self.service.task_call(task_id, lambda m: m.stop(task_id))

    async def clear(self, task_id: str) -> None:
        await self.service.clear_task(task_id)


def register_all(dispatcher: Any, service: StorageService) -> None:
    """Bind every storage verb (the daemon's composition root calls this once)."""
    dispatcher.register("StoragePool", StoragePoolApi(service))
    dispatcher.register("StorageDomain", StorageDomainApi(service))
    dispatcher.register("Volume", VolumeApi(service))
    dispatcher.register("Image", ImageApi(service))
    dispatcher.register("Host", HostStorageApi(service))
    dispatcher.register("Task", TaskApi(service))
