"""The hook runner: runs the script chain of a hook point over an XML or JSON document.

Owns VDSM's hook contract as seen from the daemon:

- the scripts of ``<root>/<point>/`` run one after another in lexical order
  (:mod:`.scripts` decides which files count);
- the document goes into a temporary file named by ``_hook_domxml`` (XML points) or
  ``_hook_json`` (JSON points); each script may rewrite it; the daemon reads it back after
  the chain and removes it, whatever happened;
- the environment is the daemon's, plus the call's extra variables (a device's custom
  properties), plus the VM's custom properties (these win, as in VDSM), plus ``vmId``,
  ``PYTHONPATH`` reaching the ``hooking`` module and ``_hook_run_dir``;
- exit code 0 is success, 1 an error after which the chain goes on, 2 an error that stops
  it; other codes are logged as warnings only. A script killed by a signal or that cannot be
  executed is an error; a script past its timeout is killed with its process group and is
  an error that stops the chain (its half-written document is not handed on);
- errors fail the call (:class:`~vdsm_py.errors.HookError`, code 1500, naming each failed
  script with its stderr) when the point's policy says so (VDSM's: most ``before_*``
  points) or the caller insists; otherwise they are logged;
- a rewritten XML document is checked with lxml, a JSON one parsed: a chain that leaves an
  unreadable document is an error with a clear message (or, where errors do not fail the
  call, logged, and the caller's document is kept);
- a point without scripts costs one directory lookup: no temporary file, no process.

Must not import the transport or rpc layers; uses no executor worker (asyncio child
processes). Small local files (the document, in the temp dir) are written inline.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from lxml import etree

from vdsm_py.errors import HookError
from vdsm_py.hooks import launchflags
from vdsm_py.hooks.environment import DOMXML_VAR, JSON_VAR, script_environment
from vdsm_py.hooks.points import POINTS, HookPoint, Payload, get_point
from vdsm_py.hooks.process import Outcome, ProcessResult, run_script
from vdsm_py.hooks.scripts import ChecksumCache, HookScript, ScriptFinder

if TYPE_CHECKING:
    from vdsm_py.config import Config

log = logging.getLogger("vdsm_py.hooks")

HOOKING_PATH = Path(__file__).resolve().parents[2] / "hooks"
"""Directory holding ``hooking.py``, put on the scripts' PYTHONPATH."""

_EMPTY: Mapping[str, str] = MappingProxyType({})

# A script's stderr is quoted in error messages up to this many characters.
_MESSAGE_STDERR = 2000

_XML_DECLARATION = re.compile(r"\A\ufeff?<\?xml\s[^>]*\?>\s*")


@dataclass(frozen=True, slots=True)
class ScriptFailure:
    """One failed script of a chain (also the items of ``HookError.data``)."""

    script: str
    reason: str  # "exit code 1", "timed out after 60 s", "killed by signal SIGSEGV", ...
    stderr: str

    def describe(self) -> str:
        text = self.stderr.strip()
        if len(text) > _MESSAGE_STDERR:
            text = text[:_MESSAGE_STDERR] + " [...]"
        return f"{self.script} ({self.reason})" + (f": {text}" if text else "")


@dataclass(frozen=True, slots=True)
class _Chain:
    output: bytes | None  # None: a script removed the document
    failures: list[ScriptFailure]
    ran: list[str]


class HookRunner:
    """Runs hook scripts found under ``root``; one instance per daemon."""

    def __init__(
        self,
        root: Path,
        *,
        timeout: float = 60.0,
        hooking_path: Path = HOOKING_PATH,
        run_dir: Path | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"hook timeout must be positive, not {timeout}")
        self.root = Path(root)
        self.timeout = timeout
        self.hooking_path = Path(hooking_path)
        self.run_dir = run_dir
        self.tmp_dir = tmp_dir
        self._finder = ScriptFinder(self.root)
        self._checksums = ChecksumCache()
        self._warned_dirs: set[str] = set()
        if not (self.hooking_path / "hooking.py").is_file():
            log.warning(
                "no hooking.py in %s: Python hook scripts importing 'hooking' will fail",
                self.hooking_path,
            )

    @classmethod
    def from_config(cls, config: Config) -> HookRunner:
        return cls(config.hooks.dir, timeout=config.hooks.timeout, run_dir=config.daemon.run_dir)

    # --- public interface -----------------------------------------------------------------

    def has_scripts(self, point: str) -> bool:
        """Whether ``point`` has any script to run now (lets callers skip building data)."""
        return bool(self._finder.scripts(get_point(point).name))

    async def run_xml(
        self,
        point: str,
        xml: str,
        *,
        vm_id: str | None = None,
        custom: Mapping[str, str] = _EMPTY,
        env: Mapping[str, str] = _EMPTY,
        raise_on_error: bool | None = None,
    ) -> str:
        """Run ``point``'s scripts over ``xml``; the XML as they left it.

        ``raise_on_error``: None follows the point's policy (VDSM's), True/False force it.
        The result carries no XML declaration (it is ``str``, ready for lxml or libvirt).
        """
        hook_point = _require(point, Payload.XML)
        scripts = self._finder.scripts(hook_point.name)
        if not scripts:
            return xml
        return await self._run_xml(hook_point, scripts, xml, vm_id, custom, env, raise_on_error)

    async def run_json(
        self,
        point: str,
        data: Any,
        *,
        vm_id: str | None = None,
        custom: Mapping[str, str] = _EMPTY,
        env: Mapping[str, str] = _EMPTY,
        raise_on_error: bool | None = None,
    ) -> Any:
        """Run ``point``'s scripts over ``data`` (JSON-able); the data as they left it."""
        hook_point = _require(point, Payload.JSON)
        scripts = self._finder.scripts(hook_point.name)
        if not scripts:
            return data
        payload = json.dumps(data).encode("utf-8")
        raising = _raising(hook_point, raise_on_error)
        chain = await self._chain(hook_point, scripts, payload, vm_id, custom, env)
        self._check_failures(hook_point, chain, raising, vm_id)
        if chain.output == payload:
            return data
        try:
            if chain.output is None:
                raise ValueError("a script removed the _hook_json file")
            return json.loads(chain.output.decode("utf-8"))
        except ValueError as exc:
            return self._bad_output(hook_point, chain, "JSON", exc, raising, data, vm_id)

    async def run(
        self,
        point: str,
        *,
        vm_id: str | None = None,
        custom: Mapping[str, str] = _EMPTY,
        env: Mapping[str, str] = _EMPTY,
        raise_on_error: bool | None = None,
    ) -> None:
        """Run ``point``'s scripts with no document (an empty ``_hook_domxml``, as VDSM)."""
        hook_point = _require(point, Payload.XML)
        scripts = self._finder.scripts(hook_point.name)
        if not scripts:
            return
        chain = await self._chain(hook_point, scripts, b"", vm_id, custom, env)
        self._check_failures(hook_point, chain, _raising(hook_point, raise_on_error), vm_id)

    async def before_vm_start(
        self,
        xml: str,
        *,
        vm_id: str,
        custom: Mapping[str, str] = _EMPTY,
        flags: int = 0,
    ) -> tuple[str, int]:
        """``before_vm_start`` with VDSM's launch-flags file: (XML, libvirt create flags).

        The scripts may read and change ``flags`` through ``hooking``'s launch-flags
        functions (this needs ``run_dir``). Errors always fail the start.
        """
        point = POINTS["before_vm_start"]
        scripts = self._finder.scripts(point.name)
        if not scripts:
            return xml, flags
        if self.run_dir is None:
            return await self._run_xml(point, scripts, xml, vm_id, custom, _EMPTY, True), flags
        launchflags.dump(self.run_dir, vm_id, flags)
        try:
            result = await self._run_xml(point, scripts, xml, vm_id, custom, _EMPTY, True)
            try:
                flags = launchflags.load(self.run_dir, vm_id, default=flags)
            except ValueError as exc:
                raise HookError(f"before_vm_start: {exc}") from None
        finally:
            launchflags.remove(self.run_dir, vm_id)
        return result, flags

    def describe(self) -> dict[str, dict[str, dict[str, str]]]:
        """Installed scripts for ``Host.getCapabilities``' ``hooks``:
        ``{point: {script: {"checksum": sha256 hex}}}``, points without scripts left out.

        Blocking (reads script files; cached by file identity): call it from a worker.
        """
        result: dict[str, dict[str, dict[str, str]]] = {}
        for name in self._finder.points_present():
            if name not in POINTS:
                if name not in self._warned_dirs:
                    self._warned_dirs.add(name)
                    log.warning(
                        "%s: %s is not a hook point; its scripts never run", self.root / name, name
                    )
                continue
            scripts = self._finder.scripts(name)
            if scripts:
                result[name] = {s.name: {"checksum": self._checksums.checksum(s)} for s in scripts}
        return result

    # --- the chain ------------------------------------------------------------------------

    async def _run_xml(
        self,
        point: HookPoint,
        scripts: list[HookScript],
        xml: str,
        vm_id: str | None,
        custom: Mapping[str, str],
        env: Mapping[str, str],
        raise_on_error: bool | None,
    ) -> str:
        payload = xml.encode("utf-8")
        raising = _raising(point, raise_on_error)
        chain = await self._chain(point, scripts, payload, vm_id, custom, env)
        self._check_failures(point, chain, raising, vm_id)
        if chain.output == payload:
            return xml
        try:
            if chain.output is None:
                raise ValueError("a script removed the _hook_domxml file")
            return _xml_text(chain.output)
        except (ValueError, etree.XMLSyntaxError) as exc:
            result: str = self._bad_output(point, chain, "XML", exc, raising, xml, vm_id)
            return result

    async def _chain(
        self,
        point: HookPoint,
        scripts: list[HookScript],
        payload: bytes,
        vm_id: str | None,
        custom: Mapping[str, str],
        env: Mapping[str, str],
    ) -> _Chain:
        suffix = ".json" if point.payload is Payload.JSON else ".xml"
        try:
            fd, data_path = tempfile.mkstemp(
                prefix=f"vdsm_py-{point.name}-", suffix=suffix, dir=self.tmp_dir
            )
        except OSError as exc:
            raise HookError(
                f"{point.name}: cannot create the hooks' document file: {exc}"
            ) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            script_env = script_environment(
                data_var=JSON_VAR if point.payload is Payload.JSON else DOMXML_VAR,
                data_path=data_path,
                vm_id=vm_id,
                custom=custom,
                extra=env,
                hooking_path=self.hooking_path,
                run_dir=self.run_dir,
                point=point.name,
            )
            failures: list[ScriptFailure] = []
            ran: list[str] = []
            for script in scripts:
                result = await run_script(script.path, script_env, self.timeout)
                ran.append(script.name)
                failure, stop = self._judge(point, script, result, vm_id)
                if failure is not None:
                    failures.append(failure)
                if stop:
                    break
            output = _read_back(data_path)
        finally:
            try:
                os.unlink(data_path)
            except FileNotFoundError:
                pass
        return _Chain(output, failures, ran)

    def _judge(
        self, point: HookPoint, script: HookScript, result: ProcessResult, vm_id: str | None
    ) -> tuple[ScriptFailure | None, bool]:
        """(the failure, if any; whether the chain stops) — and the log line."""
        where = f"{point.name}/{script.name}"
        took = f"{result.duration:.3f}s"
        if result.outcome is Outcome.NOT_STARTED:
            failure = ScriptFailure(script.name, "could not be started", result.stderr)
            log.warning("hook %s (vmId=%s): %s", where, vm_id, result.stderr)
            return failure, False
        if result.outcome is Outcome.TIMED_OUT:
            reason = f"timed out after {self.timeout:g} s; killed with its process group"
            log.warning("hook %s (vmId=%s): %s, stderr: %r", where, vm_id, reason, result.stderr)
            return ScriptFailure(script.name, reason, result.stderr), True
        rc = result.returncode
        assert rc is not None
        if result.stdout:
            log.debug("hook %s (vmId=%s) stdout: %r", where, vm_id, result.stdout)
        if rc == 0:
            if result.stderr:
                log.info(
                    "hook %s (vmId=%s): rc=0 in %s, stderr: %s",
                    where,
                    vm_id,
                    took,
                    result.stderr.rstrip(),
                )
            else:
                log.debug("hook %s (vmId=%s): rc=0 in %s", where, vm_id, took)
            return None, False
        if rc in (1, 2) or rc < 0:
            reason = f"exit code {rc}" if rc > 0 else f"killed by signal {_signal_name(-rc)}"
            log.warning(
                "hook %s (vmId=%s): %s in %s, stderr: %r", where, vm_id, reason, took, result.stderr
            )
            return ScriptFailure(script.name, reason, result.stderr), rc == 2
        log.warning(
            "hook %s (vmId=%s) returned unexpected exit code %d in %s (reserved; "
            "not treated as an error), stderr: %r",
            where,
            vm_id,
            rc,
            took,
            result.stderr,
        )
        return None, False

    def _check_failures(
        self, point: HookPoint, chain: _Chain, raising: bool, vm_id: str | None
    ) -> None:
        if not chain.failures:
            return
        message = f"{point.name} hook failed: " + "; ".join(f.describe() for f in chain.failures)
        if raising:
            raise HookError(
                message,
                data=[
                    {"script": f.script, "reason": f.reason, "stderr": f.stderr}
                    for f in chain.failures
                ],
            )
        log.error("%s (vmId=%s); the operation goes on", message, vm_id)

    def _bad_output(
        self,
        point: HookPoint,
        chain: _Chain,
        kind: str,
        exc: Exception,
        raising: bool,
        original: Any,
        vm_id: str | None,
    ) -> Any:
        message = f"{point.name} hook scripts ({', '.join(chain.ran)}) left invalid {kind}: {exc}"
        if raising:
            raise HookError(message)
        log.error("%s (vmId=%s); using the %s as it was before the hooks", message, vm_id, kind)
        return original


def _require(point: str, payload: Payload) -> HookPoint:
    hook_point = get_point(point)
    if hook_point.payload is not payload:
        raise ValueError(
            f"hook point {point} takes {hook_point.payload.value}, not {payload.value}"
        )
    return hook_point


def _raising(point: HookPoint, raise_on_error: bool | None) -> bool:
    return point.fails_operation if raise_on_error is None else raise_on_error


def _xml_text(data: bytes) -> str:
    """``data`` as XML text without its declaration; ValueError/XMLSyntaxError if not XML."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.fromstring(data, parser)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Declared in another encoding: let lxml, which honoured the declaration, say it.
        return str(etree.tostring(root, encoding="unicode"))
    return _XML_DECLARATION.sub("", text, count=1)


def _read_back(path: str) -> bytes | None:
    """The document as the scripts left it (a small file in the temp dir; None if gone)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
