"""Fencing: making sure a NonResponsive host no longer runs its highly available VMs before
they are restarted elsewhere (a VM run twice on shared storage destroys its disks).

Started when a host becomes NonResponsive while it holds highly available VMs that should
be up (they are Unknown). Each attempt, in order:

1. **Soft fencing** (no SSH here): a fresh mTLS session with the host's daemon, which must
   present the certificate the engine issued it. If it answers, each such VM is destroyed
   there (``VM.destroy``; "no such VM" counts as done); VMs destroyed are Down and restarted
   elsewhere by :class:`~engine_lite.vms.VmManager`.
2. **Hard fencing**: the host's fence agent, an argv list configured per host (never a shell
   string), run with ``action=off``, ``host=NAME``, ``address=ADDRESS``, ``port=PORT`` as
   ``key=value`` lines on its standard input (the fence-agents convention). Exit status 0
   within ``fence_timeout`` means the host is off: every VM it had is Down.

No success (no agent configured, agent failed or timed out) means no restart: the VMs stay
Unknown, an error event says why, and the attempt is repeated every
``fence_retry_interval`` while the host stays NonResponsive. Must not schedule or start VMs
itself (the VM manager does) nor change host states (the monitor and the engine do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable

from engine_lite.context import Context
from engine_lite.errors import InvalidInput
from engine_lite.models import Host, HostStatus
from engine_lite.monitor import BadAnswer, open_session
from engine_lite.vms import NO_SUCH_VM, VmManager
from vdsm_py.client import RpcError

log = logging.getLogger("engine_lite.fencing")

OUTPUT_LIMIT = 400  # characters of the agent's output kept in the event


def check_agent(argv: object) -> list[str]:
    """A fence agent argv: a list of non-empty strings (an empty list: no agent)."""
    if not isinstance(argv, list) or not all(isinstance(a, str) and a for a in argv):
        raise InvalidInput("a fence agent is a list of non-empty arguments (argv), "
                           f"not {argv!r}")
    if argv and not os.path.isabs(argv[0]):
        raise InvalidInput(f"the fence agent's program must be an absolute path, not {argv[0]!r}")
    return list(argv)


async def run_agent(argv: list[str], host: Host, timeout: float) -> tuple[bool, str]:
    """Run the fence agent with ``action=off``; (succeeded, what it said or why it failed)."""
    options = f"action=off\nhost={host.name}\naddress={host.address}\nport={host.port}\n"
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        return False, f"cannot run {argv[0]}: {exc.strerror or exc}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(options.encode()), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"{argv[0]} did not finish within {timeout:g} s"
    said = out.decode(errors="replace").strip()[-OUTPUT_LIMIT:]
    if proc.returncode != 0:
        return False, f"{argv[0]} exited with {proc.returncode}" + (f": {said}" if said else "")
    return True, said


class Fencer:
    """One fencing procedure at a time per host, until it succeeds or is not needed."""

    def __init__(self, ctx: Context, vms: VmManager, ssl_context: ssl.SSLContext,
                 serials: Callable[[Host], set[str]]) -> None:
        self.ctx = ctx
        self.vms = vms
        self._ssl = ssl_context
        self._serials = serials
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def host_unresponsive(self, host_id: str) -> None:
        """Start fencing ``host_id`` if it holds HA VMs to recover (idempotent)."""
        if host_id in self._tasks or not self.vms.awaiting_fence(host_id):
            return
        task = asyncio.create_task(self._procedure(host_id), name=f"fence {host_id}")
        self._tasks[host_id] = task
        task.add_done_callback(lambda t: self._done(host_id, t))

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _done(self, host_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(host_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("fencing host %s failed", host_id, exc_info=task.exception())

    async def _procedure(self, host_id: str) -> None:
        while True:
            host = self.ctx.hosts.get(host_id)
            if host is None or host.status != HostStatus.NON_RESPONSIVE:
                return  # removed, or answering again: its reports tell what runs there
            if not self.vms.awaiting_fence(host_id) or await self._attempt(host):
                return
            with contextlib.suppress(TimeoutError):  # retry, unless it answers meanwhile
                await self.ctx.wait_until(_answering(host), self.ctx.config.fence_retry_interval)

    async def _attempt(self, host: Host) -> bool:
        if await self._soft(host):
            return True
        waiting = ", ".join(sorted(vm.name for vm in self.vms.awaiting_fence(host.id)))
        if not host.fence_agent:
            await self._failed(host, "it does not answer and has no fence agent", waiting)
            return False
        ok, said = await run_agent(host.fence_agent, host, self.ctx.config.fence_timeout)
        if not ok:
            await self._failed(host, f"its fence agent failed ({said})", waiting)
            return False
        await self.ctx.record("warning", "host_fenced", f"host {host.name} fenced by its "
                              "agent (action=off)" + (f": {said}" if said else ""),
                              host_id=host.id)
        await self.vms.fenced(host.id, None, f"its host {host.name} was fenced")
        return True

    async def _soft(self, host: Host) -> bool:
        """Destroy the HA VMs through the host's daemon if it answers; True if all are gone."""
        cfg = self.ctx.config
        try:
            client = await open_session(host.address, host.port, ssl_context=self._ssl,
                                        expected=self._serials(host),
                                        timeout=cfg.connect_timeout)
        except (OSError, TimeoutError, BadAnswer) as exc:
            log.info("host %s: soft fencing impossible: %s", host.name, exc)
            return False
        done: list[str] = []
        try:
            for vm in self.vms.awaiting_fence(host.id):
                try:
                    await client.call("VM.destroy", {"vmID": vm.id}, timeout=cfg.call_timeout)
                except RpcError as exc:
                    if exc.code != NO_SUCH_VM:
                        log.warning("vmId=%s: soft fencing on %s: %s", vm.id, host.name,
                                    exc.message)
                        continue
                done.append(vm.id)
        except (OSError, TimeoutError) as exc:
            log.info("host %s: soft fencing interrupted: %s", host.name, exc)
        finally:
            with contextlib.suppress(OSError):
                await client.close(timeout=1.0)
        if done:
            await self.ctx.record("warning", "host_soft_fenced", f"host {host.name} answered "
                                  f"again: {len(done)} highly available VM(s) destroyed there "
                                  "before restarting them elsewhere", host_id=host.id)
            await self.vms.fenced(host.id, done, f"destroyed on {host.name} (soft fencing)")
        return not self.vms.awaiting_fence(host.id)

    async def _failed(self, host: Host, why: str, waiting: str) -> None:
        await self.ctx.record("error", "host_fence_failed", f"host {host.name} not fenced: "
                              f"{why}; highly available VM(s) {waiting} not restarted "
                              "elsewhere (they may still run there)", host_id=host.id)


def _answering(host: Host) -> Callable[[], bool]:
    return lambda: host.status != HostStatus.NON_RESPONSIVE
