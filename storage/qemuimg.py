"""A small adapter over ``qemu-img``: create, info, resize, check, measure, convert, commit,
rebase.

Commands are argv lists (never a shell), ``--output json`` answers are parsed, and failures
are raised as VDSM storage errors: the caller names the error class of its operation
(VolumeCreationError, VolumeExtendingError...), and a full file system is always
NoSpaceLeftOnDomain (397). The long operations (convert, commit) run with ``-p`` and hand
their progress (0-100) to a callback, which may raise to abort the operation (the process
is killed and the exception propagates). Blocking: call it from a worker of the executor, never the loop.
Must not know about domains or metadata.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
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


Progress = Callable[[float], None]


@functools.cache
def _qemu_img() -> str:
    """qemu-img's absolute path, looked up once (not at every spawn); the bare name if it
    is not installed, so that running it fails with a clear error."""
    return shutil.which(QEMU_IMG) or QEMU_IMG
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def _raise_failure(argv: list[str], returncode: int, stderr: str,
                   error: type[StorageError]) -> None:
    detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if "No space left on device" in stderr:
        raise NoSpaceLeftOnDomain(f"qemu-img {argv[1]}: {detail}")
    raise error(f"qemu-img {argv[1]} failed (rc={returncode}): {detail}")


class Running:
    """A started qemu-img; :meth:`wait` collects its end (started and waited for by the
    same caller, so the caller can do other work meanwhile)."""

    def __init__(self, argv: list[str], error: type[StorageError], timeout: float,
                 pass_fds: tuple[int, ...] = ()) -> None:
        log.debug("running %s", argv)
        self.argv, self.error, self.timeout = argv, error, timeout
        self.deadline = time.monotonic() + timeout
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, pass_fds=pass_fds)
        except OSError as exc:
            raise error(f"cannot run qemu-img: {exc.strerror}") from None

    def wait(self) -> str:
        """Its stdout; raises ``error`` (or NoSpaceLeftOnDomain) if it failed or overran."""
        try:
            stdout, stderr = self.proc.communicate(
                timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise self.error(f"qemu-img did not finish within {self.timeout:g} s: "
                             f"{self.argv[1]}") from None
        except BaseException:
            self.proc.kill()
            self.proc.communicate()
            raise
        if self.proc.returncode != 0:
            _raise_failure(self.argv, self.proc.returncode, stderr, self.error)
        return stdout

    def kill(self) -> None:
        """Stop it if it still runs and collect it (its outcome no longer matters)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


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
        _raise_failure(argv, proc.returncode, proc.stderr, error)
    return proc.stdout


def _run_with_progress(argv: list[str], error: type[StorageError], timeout: float,
                       progress: Progress | None) -> None:
    """Run a ``-p`` command, feeding each progress figure to ``progress``.

    stderr goes to a pipe read only at the end: qemu-img writes little there, and the
    progress stream on stdout is what must not block.
    """
    log.debug("running %s", argv)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise error(f"cannot run qemu-img: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    try:
        buf = b""
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            found = _PROGRESS.findall(buf)
            if found:
                buf = buf[buf.rfind(b")") + 1:]
                if progress is not None:
                    progress(float(found[-1]))
            if time.monotonic() > deadline:
                raise error(f"qemu-img did not finish within {timeout:g} s: {argv[1]}")
        returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        stderr = proc.stderr.read().decode("utf-8", "replace")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if returncode != 0:
        _raise_failure(argv, returncode, stderr, error)


def _backing(flag: str, backing: str, backing_format: str | None) -> list[str]:
    """``flag <backing> -F <format>``: a backing file always goes with its format."""
    if backing_format not in FORMATS:
        raise ValueError(f"a backing file needs its format (-F), not {backing_format!r}")
    return [flag, backing, "-F", backing_format]


def create(path: Path, fmt: str, size: int, *, error: type[StorageError] = QemuImgFailed,
           timeout: float = DEFAULT_TIMEOUT, **layout: str | None) -> None:
    """Create ``path`` of ``size`` bytes; ``layout``: ``backing`` (relative to ``path``,
    makes a layer), ``backing_format``, ``preallocation`` (qemu-img's option: ``falloc``
    for raw, ``metadata`` for qcow2)."""
    _run(_create_argv(path, fmt, size, **layout), error, timeout)


def start_create(
    path: Path | int,
    fmt: str,
    size: int,
    *,
    backing: str | None = None,
    backing_format: str | None = None,
    preallocation: str | None = None,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = DEFAULT_TIMEOUT,
) -> Running:
    """:func:`create`, started: the caller must ``wait()`` (or ``kill()``) it (most of a
    create is qemu-img's own start-up, which the caller's other work can overlap).

    ``path`` may be an open file descriptor (e.g. of an unnamed ``O_TMPFILE`` file):
    qemu-img then writes the image into that file, reached as ``/proc/self/fd/<fd>``."""
    fds = (path,) if isinstance(path, int) else ()
    target = Path(f"/proc/self/fd/{path}") if isinstance(path, int) else path
    return Running(_create_argv(target, fmt, size, backing=backing,
                                backing_format=backing_format, preallocation=preallocation),
                   error, timeout, pass_fds=fds)


def _create_argv(path: Path, fmt: str, size: int, *, backing: str | None = None,
                 backing_format: str | None = None, preallocation: str | None = None
                 ) -> list[str]:
    if fmt not in FORMATS:
        raise ValueError(f"unsupported format {fmt}")
    argv = [_qemu_img(), "create", "-f", fmt]
    options = []
    if fmt == "qcow2":
        options.append("compat=1.1")
    if preallocation:
        options.append(f"preallocation={preallocation}")
    if options:
        argv += ["-o", ",".join(options)]
    if backing is not None:
        argv += [*_backing("-b", backing, backing_format), "-u"]
    return argv + [str(path), str(size)]


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
    argv = [_qemu_img(), "info", "--output", "json", "-U"]
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
    _run([_qemu_img(), "resize", "-f", fmt, str(path), str(size)], error, timeout)


def check(
    path: Path,
    fmt: str,
    *,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """``qemu-img check`` of a qcow2 image; raise ``error`` when it reports corruption."""
    argv = [_qemu_img(), "check", "--output", "json", "-f", fmt, "-U", str(path)]
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


def measure(
    path: Path,
    fmt: str,
    out_fmt: str,
    *,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = 60.0,
) -> int:
    """Bytes a copy of ``path`` (its whole chain, collapsed) needs in ``out_fmt``."""
    argv = [_qemu_img(), "measure", "--output", "json", "-U", "-f", fmt, "-O", out_fmt, str(path)]
    out = _run(argv, error, timeout)
    try:
        return int(json.loads(out)["required"])
    except (ValueError, KeyError, TypeError) as exc:
        raise error(f"cannot parse qemu-img measure output for {path}: {exc}") from None


def convert(
    src: Path,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    *,
    backing: str | None = None,
    backing_format: str | None = None,
    create: bool = False,
    progress: Progress | None = None,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Copy ``src`` (read through its backing chain) into ``dst``.

    Without ``backing`` the chain is collapsed; with it, only ``src``'s own clusters are
    copied and ``dst`` is backed by ``backing`` (relative to ``dst``). ``create=False``
    writes into an existing ``dst`` made with the right size (``-n``), so the volume's
    file, mode and preallocation are the domain's, not qemu-img's.
    """
    if src_fmt not in FORMATS or dst_fmt not in FORMATS:
        raise ValueError(f"unsupported format {src_fmt} -> {dst_fmt}")
    argv = [_qemu_img(), "convert", "-p", "-f", src_fmt, "-O", dst_fmt]
    if not create:
        argv.append("-n")
    elif dst_fmt == "qcow2":
        argv += ["-o", "compat=1.1"]
    if backing is not None:
        argv += _backing("-B", backing, backing_format)
    argv += [str(src), str(dst)]
    _run_with_progress(argv, error, timeout, progress)


def commit(
    top: Path,
    top_fmt: str,
    base: Path,
    *,
    progress: Progress | None = None,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Write ``top``'s clusters into ``base`` (an ancestor); ``top`` is left as it was."""
    argv = [_qemu_img(), "commit", "-p", "-f", top_fmt, "-b", str(base), str(top)]
    _run_with_progress(argv, error, timeout, progress)


def rebase_unsafe(
    path: Path,
    backing: str,
    backing_format: str,
    *,
    error: type[StorageError] = QemuImgFailed,
    timeout: float = 60.0,
) -> None:
    """Point qcow2 ``path`` at ``backing`` without copying data (the caller guarantees
    that the new backing file reads the same as the old one)."""
    argv = [_qemu_img(), "rebase", "-u", "-f", "qcow2", *_backing("-b", backing, backing_format),
            str(path)]
    _run(argv, error, timeout)
