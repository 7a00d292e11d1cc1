"""cgminer API latency while the REST login is attacked, measured in one run against a real ``mos run``.

The device runs in its own process (CPU backend, no reachable pool, so it is idle). This process first
measures ``summary`` latency on 4028 with nobody else talking to the device (the baseline), then again while
N guessers hammer ``POST /api/v1/auth/login`` with wrong passwords, each from its own loopback address and
for its own account (the worst case for the per-client and per-account backoff), and again with a 52 MB
login body being sent. Before the hardening, 40 guessers took this from ~5 ms to ~2.9 s (scrypt ran on the
event loop). Prints p50/p95/max and the ratio to the baseline.

Usage: python benchmarks/api_under_attack.py [--guessers 40] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

import httpx

from openmos.base.net import free_local_port


async def summary_latency(port: int, count: int, errors: Counter[str] | None = None) -> list[float]:
    """Sequential ``summary`` requests; a failed one counts as an error (and as 60 s if it timed out)."""
    out = []
    for _ in range(count):
        began = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'{"command":"summary"}')
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), 60)
            writer.close()
            if not reply.endswith(b"\x00") and errors is not None:
                errors["short reply"] += 1
        except (OSError, TimeoutError) as exc:
            if errors is None:
                raise
            errors[type(exc).__name__] += 1
        out.append(time.perf_counter() - began)
        await asyncio.sleep(0.01)
    return out


def describe(name: str, samples: list[float], base: list[float] | None) -> str:
    q = statistics.quantiles(samples, n=20)
    p50, p95 = statistics.median(samples), q[18]
    ratio = f"  ({p50 / statistics.median(base):.2f}x / {p95 / statistics.quantiles(base, n=20)[18]:.2f}x baseline)" \
        if base else ""
    return f"{name:<34} p50 {p50 * 1e3:7.2f} ms  p95 {p95 * 1e3:7.2f} ms  max {max(samples) * 1e3:7.2f} ms{ratio}"


async def guesser(rest: int, index: int, stop: asyncio.Event, outcomes: Counter[int]) -> None:
    source = f"127.0.{index // 250 + 10}.{index % 250 + 1}"
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{rest}", timeout=60) as client:
        n = 0
        while not stop.is_set():
            r = await client.post("/api/v1/auth/login", json={"user": f"user{index}", "password": f"guess-{n}"})
            outcomes[r.status_code] += 1
            n += 1
            if r.status_code == 429:  # a polite attacker waits; a rude one is answered 429 without a hash anyway
                await asyncio.sleep(min(float(r.headers.get("Retry-After", "1")), 0.5))


async def huge_body(rest: int, stop: asyncio.Event, outcomes: Counter[int]) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", rest)
            writer.write(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 52000000\r\n\r\n" + b"A" * 65536)
            line = await asyncio.wait_for(reader.readline(), 30)
            outcomes[int(line.split()[1]) if line else 0] += 1
            writer.close()
        except (TimeoutError, OSError, IndexError, ValueError):
            outcomes[0] += 1


async def run(args: argparse.Namespace) -> None:
    cg, rest = free_local_port(), free_local_port()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "OPENMOS_STATE_DIR": state}
        proc = subprocess.Popen([sys.executable, "-m", "openmos.cli.main", "run", "--pool", "stratum+tcp://127.0.0.1:9",
                                 "--hardware", "cpu:1", "--no-status", "--api-port", str(cg), "--rest-port", str(rest)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    await summary_latency(cg, 1)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            errors: Counter[str] = Counter()
            base = await summary_latency(cg, args.requests, errors)
            print(describe("idle device (baseline)", base, None), dict(errors) or "")
            for label, attack in ((f"{args.guessers} login guessers", "guess"), ("52 MB login bodies", "body")):
                stop, outcomes = asyncio.Event(), Counter[int]()
                tasks = ([asyncio.create_task(guesser(rest, i, stop, outcomes)) for i in range(args.guessers)]
                         if attack == "guess" else [asyncio.create_task(huge_body(rest, stop, outcomes))
                                                    for _ in range(4)])
                await asyncio.sleep(1.0)
                errors = Counter()
                during = await summary_latency(cg, args.requests, errors)
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                print(describe(f"during {label}", during, base), dict(errors) or "")
                print(f"{'':<34} attacker replies: {dict(sorted(outcomes.items()))}")
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guessers", type=int, default=40)
    parser.add_argument("--requests", type=int, default=200, help="summary requests per phase")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
