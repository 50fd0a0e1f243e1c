"""On-disk metadata formats: domain metadata (key=value sealed by a checksum) and volume
metadata (``.meta`` files: sorted key=value lines ending with ``EOF``).

Domain metadata follows VDSM's ``persistent.py``: lines ``KEY=value`` sorted by key, then
``_SHA_CKSUM=<sha1>``, where the SHA-1 is over the sorted lines without newlines. Unlike
VDSM, metadata without a checksum is refused, never trusted: a torn or hand-edited file
makes the domain invalid. Volume metadata follows ``volumemetadata.py`` (V5 keys, ``CAP``
in bytes, at most 512 bytes); a file without its ``EOF`` line is torn.

Writers replace files atomically (temp file, fsync, rename, fsync of the directory); a
writer whose file is made durable by a later write (``durable=False``) skips the fsyncs.
Must not know about domains' behaviour; only formats and files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from storage import constants as sc
from vdsm_py.errors import InvalidMetadata, MetaDataSealIsBroken, VolumeMetadataReadError


def checksum(lines: Iterable[str]) -> str:
    h = hashlib.sha1()
    for line in lines:
        h.update(line.encode("ascii", "xmlcharrefreplace"))
    return h.hexdigest()


def _sorted_lines(md: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in sorted(md.items())]


def dump_domain_metadata(md: Mapping[str, str]) -> bytes:
    """The sealed text of domain metadata ``md`` (keys and values must hold no newline)."""
    for key, value in md.items():
        if "\n" in key or "\n" in value or "=" in key:
            raise ValueError(f"metadata key or value not storable: {key!r}={value!r}")
    lines = _sorted_lines(md)
    lines.append(f"{sc.SHA_CKSUM_TAG}={checksum(lines)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_domain_metadata(data: bytes, where: str) -> dict[str, str]:
    """Parse and verify sealed domain metadata; raise if torn, unsealed or corrupted.

    ``data`` may be padded with NUL bytes (an O_DIRECT read of a whole block).
    """
    try:
        text = data.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMetadata(f"{where}: metadata is not text: {exc}") from None
    md: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InvalidMetadata(f"{where}: metadata line without '=': {line[:80]!r}")
        md[key.strip()] = value
    if not md:
        raise InvalidMetadata(f"{where}: metadata is empty")
    declared = md.pop(sc.SHA_CKSUM_TAG, None)
    if declared is None:
        raise InvalidMetadata(f"{where}: metadata has no checksum (torn or foreign write)")
    computed = checksum(_sorted_lines(md))
    if declared != computed:
        raise MetaDataSealIsBroken(
            f"{where}: metadata seal is broken: declares {declared}, content gives {computed}"
        )
    return md


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_synced(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` and fsync it."""
    write_all(fd, data)
    os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (created, renamed, removed names) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = sc.METADATA_PERMISSIONS, *,
                     durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a reader sees the old or the new file, never a mix.

    ``durable=False`` only for a file that a later durable write replaces before anything
    relies on it surviving a power loss (e.g. the ILLEGAL ``.meta`` of a volume being made).
    """
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        (write_synced if durable else write_all)(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        fsync_dir(path.parent)


# --- volume metadata ----------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeMetadata:
    """The content of one ``<volUUID>.meta`` (V5 keys)."""

    domain: str
    image: str
    parent: str
    capacity: int
    format: str  # COW or RAW
    type: str  # PREALLOCATED or SPARSE
    voltype: str  # LEAF, INTERNAL or SHARED
    disktype: str
    description: str
    legality: str
    ctime: int
    generation: int = 0
    sequence: int = 0

    def dump(self) -> bytes:
        info = {
            sc.MD_CAPACITY: str(self.capacity),
            sc.MD_CTIME: str(self.ctime),
            sc.MD_DESCRIPTION: self.description[: sc.DESCRIPTION_SIZE],
            sc.MD_DISKTYPE: self.disktype,
            sc.MD_DOMAIN: self.domain,
            sc.MD_FORMAT: self.format,
            sc.MD_GENERATION: str(self.generation),
            sc.MD_IMAGE: self.image,
            sc.MD_LEGALITY: self.legality,
            sc.MD_PUUID: self.parent,
            sc.MD_SEQUENCE: str(self.sequence),
            sc.MD_TYPE: self.type,
            sc.MD_VOLTYPE: self.voltype,
        }
        for key, value in info.items():
            if "\n" in value:
                raise ValueError(f"volume metadata {key} holds a newline")
        text = "".join(f"{k}={info[k]}\n" for k in sorted(info)) + f"{sc.MD_EOF}\n"
        data = text.encode("utf-8")
        if len(data) > sc.VOLUME_METADATA_SIZE:
            raise ValueError(f"volume metadata too long ({len(data)} bytes)")
        return data

    @classmethod
    def parse(cls, data: bytes, where: str) -> VolumeMetadata:
        """Parse a ``.meta`` file; a missing ``EOF``, key or bad value raises error 207."""
        md: dict[str, str] = {}
        ended = False
        for raw in data.splitlines():
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise VolumeMetadataReadError(f"{where}: volume metadata is not text") from None
            if line.startswith(sc.MD_EOF):
                ended = True
                break
            key, sep, value = line.partition("=")
            if sep:
                md[key.strip()] = value.strip()
        if not ended:
            raise VolumeMetadataReadError(f"{where}: volume metadata is torn (no EOF line)")
        try:
            return cls(
                domain=md[sc.MD_DOMAIN],
                image=md[sc.MD_IMAGE],
                parent=md[sc.MD_PUUID],
                capacity=int(md[sc.MD_CAPACITY]),
                format=md[sc.MD_FORMAT],
                type=md[sc.MD_TYPE],
                voltype=md[sc.MD_VOLTYPE],
                disktype=md[sc.MD_DISKTYPE],
                description=md.get(sc.MD_DESCRIPTION, ""),
                legality=md[sc.MD_LEGALITY],
                ctime=int(md[sc.MD_CTIME]),
                generation=int(md.get(sc.MD_GENERATION, "0")),
                sequence=int(md.get(sc.MD_SEQUENCE, "0")),
            )
        except KeyError as exc:
            raise VolumeMetadataReadError(f"{where}: volume metadata lacks {exc}") from None
        except ValueError as exc:
            raise VolumeMetadataReadError(f"{where}: bad volume metadata value: {exc}") from None
