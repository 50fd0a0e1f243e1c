"""A small adapter over ``qemu-img``: create, info, resize, check.

Commands are argv lists (never a shell), ``--output json`` answers are parsed, and failures
are raised as VDSM storage errors: the caller names the error class of its operation
(VolumeCreationError, VolumeExtendingError...), and a full file system is always
NoSpaceLeftOnDomain (397). Blocking: call it from a worker of the executor, never the loop.
Must not know about domains or metadata.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdsm_py.errors import NoSpaceLeftOnDomain, StorageError

log = logging.getLogger("vdsm_py.storage.qemuimg")

QEMU_IMG = "qemu-img"
FORMATS = ("raw", "qcow2")
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class ImageInfo:
    """What ``qemu-img info`` says about one image of a chain."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int
    backing_filename: str | None
    backing_format: str | None
    cluster_size: int | None = None
    compat: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ImageInfo:
        specific = (obj.get("format-specific") or {}).get("data") or {}
        return cls(
            filename=obj["filename"],
            format=obj["format"],
            virtual_size=int(obj["virtual-size"]),
            actual_size=int(obj.get("actual-size", 0)),
            backing_filename=obj.get("backing-filename"),
            backing_format=obj.get("backing-filename-format"),
            cluster_size=obj.get("cluster-size"),
            compat=specific.get("compat"),
        )


class QemuImgFailed(StorageError):
    """qemu-img failed in a way the caller did not map (error 200)."""


def _run(argv: list[str], error: type[StorageError], timeout: float) -> str:
    log.debug("running %s", argv)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise error(f"qemu-img did not finish within {timeout:g} s: {argv[1]}") from None
    except OSError as exc:
        raise error(f"cannot run qemu-img: {exc.strerror}") from None
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        if "No space left on device" in proc.stderr:
            raise NoSpaceLeftOnDomain(f"qemu-img {argv[1]}: {detail}")
        raise error(f"qemu-img {argv[1]} failed (rc={proc.returncode}): {detail}")
    return proc.stdout


def create(
    path: Path,
    fmt: str,
    size: int,
    *,
    backing: str | None = None,
    backing_format: str | None = None,
    preallocation: str | None = None,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Create ``path`` of ``size`` bytes; ``backing`` (relative to ``path``) makes a layer.

    ``preallocation`` is qemu-img's option (``falloc`` for raw, ``metadata`` for qcow2).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unsupported format {fmt}")
    argv = [QEMU_IMG, "create", "-f", fmt]
    options = []
    if fmt == "qcow2":
        options.append("compat=1.1")
    if preallocation:
        options.append(f"preallocation={preallocation}")
    if options:
        argv += ["-o", ",".join(options)]
    if backing is not None:
        if backing_format not in FORMATS:
            raise ValueError("a backing file needs its format (-F)")
        argv += ["-b", backing, "-F", backing_format, "-u"]
    argv += [str(path), str(size)]
    _run(argv, error, timeout)


def info(
    path: Path,
    *,
    chain: bool = False,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = 60.0,
) -> list[ImageInfo]:
    """The image (``chain=False``: a list of one) or its whole backing chain, top first.

    ``-U`` (force share) lets us read an image a running VM has open.
    """
    argv = [QEMU_IMG, "info", "--output", "json", "-U"]
    if chain:
        argv.append("--backing-chain")
    argv.append(str(path))
    out = _run(argv, error, timeout)
    try:
        data = json.loads(out)
        items = data if isinstance(data, list) else [data]
        return [ImageInfo.from_json(item) for item in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise error(f"cannot parse qemu-img info output for {path}: {exc}") from None


def resize(
    path: Path,
    fmt: str,
    size: int,
    *,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Grow ``path`` to ``size`` bytes (shrinking is refused by the domain before this)."""
    _run([QEMU_IMG, "resize", "-f", fmt, str(path), str(size)], error, timeout)


def check(
    path: Path,
    fmt: str,
    *,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """``qemu-img check`` of a qcow2 image; raise ``error`` when it reports corruption."""
    argv = [QEMU_IMG, "check", "--output", "json", "-f", fmt, "-U", str(path)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )
    try:
        report: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        report = {}
    if proc.returncode not in (0, 3) or report.get("corruptions", 0):
        detail = proc.stderr.strip() or f"{report.get('corruptions', '?')} corruptions"
        raise error(f"qemu-img check of {path} failed: {detail}")
    return report
