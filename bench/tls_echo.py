"""Baseline for bench/rpc.py: a raw asyncio TLS echo server, mutual TLS like the daemon.

It echoes every NUL-terminated message back as is, on an ``asyncio.Protocol`` with the same
TLS settings as vdsmd, so the ratio between the two measures what STOMP + JSON-RPC +
dispatch add on top of the cheapest possible server on this machine.

    python bench/tls_echo.py PKI_DIR PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdsm_py.pki.layout import PkiPaths  # noqa: E402
from vdsm_py.transport.tls import server_context  # noqa: E402


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.rfind(b"\0")
        if end >= 0:
            self.transport.write(self.buf[: end + 1])  # type: ignore[attr-defined]
            self.buf = self.buf[end + 1 :]


async def main(pki_dir: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Echo, "127.0.0.1", port, ssl=server_context(PkiPaths(Path(pki_dir)))
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
