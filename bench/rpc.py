"""RPC benchmark: Host.ping2 over mutual TLS + STOMP against a raw TLS echo baseline.

Starts ``vdsmd --dev`` and ``bench/tls_echo.py`` in their own processes and drives both from
this one, the same way (asyncio streams, one NUL-terminated message out, one in):

1. closed loop, one connection: round trips per second for ping2 and for the echo server
   with a message of the same size; ``ratio`` = ping2 rate / echo rate (target >= 0.4);
2. open loop: 64 connections offering 1,000 calls/s in total on a fixed schedule; latency
   is measured from each call's *scheduled* send time (no coordinated omission); p50/p99
   (target p99 <= 5 ms).

    .venv/bin/python bench/rpc.py [--seconds 5] [--clients 64] [--rate 1000]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from tests.integration.daemon_proc import free_port, start_daemon  # noqa: E402
from vdsm_py.transport.stomp import Frame, encode  # noqa: E402

REQUESTS = "jms.topic.vdsm_requests"


def ping_frame(reply_to: str, call_id: str) -> bytes:
    body = orjson.dumps([{"jsonrpc": "2.0", "method": "Host.ping2", "params": {}, "id": call_id}])
    headers = {"destination": REQUESTS, "reply-to": reply_to, "content-type": "application/json"}
    return encode(Frame("SEND", headers, body))


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame (heart-beat newlines before it stripped)."""
    return (await reader.readuntil(b"\0")).lstrip(b"\r\n")


async def stomp_connect(port: int, ctx: ssl.SSLContext):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(encode(Frame("CONNECT", {"accept-version": "1.2", "host": "bench", "heart-beat": "0,24000"}, b"")))
    connected = await read_frame(reader)
    assert connected.startswith(b"CONNECTED"), connected[:200]
    reply_to = str(uuid.uuid4())
    writer.write(encode(Frame("SUBSCRIBE", {"destination": reply_to, "id": str(uuid.uuid4()), "ack": "auto"}, b"")))
    await writer.drain()
    return reader, writer, reply_to


async def closed_loop_stomp(port: int, ctx: ssl.SSLContext, seconds: float) -> tuple[float, int]:
    reader, writer, reply_to = await stomp_connect(port, ctx)
    frame = ping_frame(reply_to, str(uuid.uuid4()))
    for _ in range(200):  # warm-up
        writer.write(frame)
        await read_frame(reader)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        writer.write(frame)
        response = await read_frame(reader)
        n += 1
        if n % 256 == 0 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    assert b'"result":true' in response, response[-200:]
    writer.close()
    return n / elapsed, len(frame)


async def closed_loop_echo(port: int, ctx: ssl.SSLContext, size: int, seconds: float) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    message = b"x" * (size - 1) + b"\0"
    for _ in range(200):
        writer.write(message)
        await reader.readuntil(b"\0")
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        writer.write(message)
        await reader.readuntil(b"\0")
        n += 1
        if n % 256 == 0 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    writer.close()
    return n / elapsed


async def open_loop(port: int, ctx: ssl.SSLContext, clients: int, rate: float, seconds: float) -> list[float]:
    """Latencies (ms) of ``rate`` calls/s spread evenly over ``clients`` connections."""
    conns = [await stomp_connect(port, ctx) for _ in range(clients)]
    per_client = rate / clients
    interval = 1.0 / per_client
    calls = int(per_client * seconds)
    latencies: list[float] = []
    t0 = time.perf_counter() + 0.2

    async def drive(index: int, reader, writer, reply_to: str) -> None:
        scheduled: dict[bytes, float] = {}

        async def receive() -> None:
            for _ in range(calls):
                frame = await read_frame(reader)
                now = time.perf_counter()
                body = frame[frame.index(b"\n\n") + 2 : -1]
                call_id = orjson.loads(body)["id"].encode()
                latencies.append((now - scheduled.pop(call_id)) * 1000)

        receiver = asyncio.create_task(receive())
        phase = index * interval / clients
        for i in range(calls):
            when = t0 + phase + i * interval
            delay = when - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            call_id = f"{index}-{i}"
            scheduled[call_id.encode()] = when
            writer.write(ping_frame(reply_to, call_id))
        await asyncio.wait_for(receiver, seconds + 30)
        writer.close()

    await asyncio.gather(*(drive(i, *c) for i, c in enumerate(conns)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating closed-loop rounds")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    daemon = start_daemon(root / "host", extra_args=["--log-level", "WARNING"])
    echo_port = free_port()
    echo = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "tls_echo.py"), str(daemon.pki_dir), str(echo_port)],
        stdout=subprocess.PIPE,
    )
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"
        ctx = daemon.client_ssl_context()
        rpc_rates, echo_rates = [], []
        size = 0
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both
            rate, size = asyncio.run(closed_loop_stomp(daemon.port, ctx, args.seconds / args.rounds))
            rpc_rates.append(rate)
            echo_rates.append(asyncio.run(closed_loop_echo(echo_port, ctx, size, args.seconds / args.rounds)))
        calls_per_s = statistics.median(rpc_rates)
        echo_per_s = statistics.median(echo_rates)
        print(f"closed loop, 1 connection: Host.ping2 {calls_per_s:,.0f} calls/s; "
              f"TLS echo ({size} B) {echo_per_s:,.0f} round trips/s; ratio {calls_per_s / echo_per_s:.2f}")
        latencies = asyncio.run(open_loop(daemon.port, ctx, args.clients, args.rate, args.seconds))
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(f"open loop, {args.clients} connections at {args.rate:.0f} calls/s: {len(latencies)} calls, "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(latencies):.2f} ms")
        figures = {
            "calls_per_s": round(calls_per_s),
            "tls_echo_per_s": round(echo_per_s),
            "ratio": round(calls_per_s / echo_per_s, 3),
            "payload_bytes": size,
            "clients_64": args.clients,
            "offered_rate_64": args.rate,
            "calls_64": len(latencies),
            "p50_ms_64": round(p50, 3),
            "p99_ms_64": round(p99, 3),
            "cpus": os.cpu_count(),
        }
    finally:
        echo.terminate()
        echo.wait(10)
        daemon.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
