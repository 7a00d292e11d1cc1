"""Fleet bus authentication cost: 10,000 devices polled with every reply signed by its device key and
verified by the controller against the enrolled key (plus schema validation), against the same poll
unauthenticated, measured in the same run.

The devices run in their own process (as they would on their own machines): a farm of simulated devices
(modelled figures), each with its own ``DeviceNode`` identity and key. The farm declares one queryable for
``openmos/bench/dev/*/status`` and every device answers the query in its own name, signed with its own key,
on its own key expression (10k separate declarations in one process would measure zenoh's declaration
bookkeeping, an artefact of simulating 10k devices in one process, not the cost of authentication).
The controller sends one wildcard query and verifies every reply as it arrives (``FleetController``).
Same devices, same schema validation on
the controller in every run:

  baseline  plain TCP, unsigned replies                   (the bus before issue 12: the unauthenticated run)
  tls       mutual TLS + access control, unsigned replies  (transport cost alone)
  signed    mutual TLS + access control, every reply signed by its device and verified against the
            pinned key, bound to the query's nonce          (what ships)

Then one telemetry publication per device (signed + verified vs plain), timed until the controller has
checked the last one. Goal: the signed poll of 10k devices < 10 s and <= 1.5x the baseline.

Usage: python benchmarks/bus_auth.py [--devices 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zenoh

from openmos.base.net import free_local_port
from openmos.fleet import keys
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import FleetController
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.messages import DeviceStatus, MessageRejected
from openmos.fleet.node import DeviceNode
from openmos.fleet.pki import FleetCA, TlsIdentity
from openmos.fleet.trust import DeviceVerifier
from openmos.testbed.device import SimulatedFleetDevice

SITE = "bench"
MODES = ("baseline", "tls", "signed")


# -- the device farm (child process) ----------------------------------------------------------------------


async def farm(mode: str, endpoint: str, devices: int) -> None:
    """Serve ``devices`` nodes; the TLS identity arrives on stdin (never written to disk)."""
    setup = json.loads(sys.stdin.readline())
    tls = TlsIdentity(*(base64.b64decode(setup[k]) for k in ("ca", "cert", "key"))) if setup else None
    bus = FleetBus(BusConfig(connect=[endpoint], tls=tls, role="device" if tls else None))
    await bus.open()
    nodes = [DeviceNode(bus, SITE, SimulatedFleetDevice(f"d{i:05d}"), []) for i in range(devices)]
    signed = mode == "signed"

    def answer(query: Any) -> None:
        """Every device of the farm answers in its own name on its own key (one reply each)."""
        try:
            params = json.loads(query.payload.to_bytes()) if query.payload is not None else {}
            nonce = params.get("nonce") if isinstance(params, dict) else None
            for node in nodes:
                status = node.device.status()
                doc = node.sign("status", status, nonce) if signed else status
                query.reply(keys.status(SITE, node.device.device_id), json.dumps(doc, separators=(",", ":")).encode())
        finally:
            query.drop()

    def on_query(query: Any) -> None:  # zenoh's thread hands the query over and returns at once
        threading.Thread(target=answer, args=(query,), daemon=True).start()

    queryable = bus._session.declare_queryable(f"{keys.ROOT}/{SITE}/dev/*/status",
                                               zenoh.handlers.Callback(on_query, indirect=False))
    print(json.dumps([n.public_key for n in nodes]), flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "telemetry":
            for node in nodes:
                key = keys.telemetry(SITE, node.device.device_id)
                bus.publish(key, node.sign("telemetry", node.device.status()) if signed else node.device.status())
            print("sent", flush=True)
    queryable.undeclare()
    await bus.close()


# -- the controller (this process) ------------------------------------------------------------------------


async def run_mode(mode: str, devices: int, rounds: int) -> tuple[list[float], float, int]:
    """(poll seconds per round, telemetry seconds, replies believed in the last round)."""
    tls = mode != "baseline"
    ca = FleetCA.create()
    endpoint = f"{'tls' if tls else 'tcp'}/127.0.0.1:{free_local_port()}"
    bus = FleetBus(BusConfig(listen=[endpoint], tls=ca.issue("controller") if tls else None,
                             role="controller" if tls else None))
    await bus.open()
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--farm", mode, endpoint, str(devices),
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                 limit=64 * 1024 * 1024)
    assert child.stdin is not None and child.stdout is not None
    setup: dict[str, str] = {}
    if tls:
        ident = ca.issue("device", SITE)
        setup = {k: base64.b64encode(v).decode() for k, v in
                 (("ca", ident.ca_pem), ("cert", ident.cert_pem), ("key", ident.key_pem))}
    child.stdin.write(json.dumps(setup).encode() + b"\n")
    await child.stdin.drain()
    public_keys = json.loads(await child.stdout.readline())
    registry = EnrollmentRegistry(None)
    registry.pin_many([(SITE, f"d{i:05d}", key) for i, key in enumerate(public_keys)])
    verifier = DeviceVerifier(registry, bus.metrics, rate_per_s=100, burst=100)
    ctl = FleetController(bus, b"", Path(os.devnull), registry=registry, verifier=verifier)
    signed = mode == "signed"
    selector = f"{keys.ROOT}/{SITE}/dev/*/status"

    async def poll() -> int:
        if signed:
            return len(await ctl._verified_query(selector, "status", timeout_s=60))
        answered = 0
        for _key, doc in await bus.query(selector, {"nonce": "unauthenticated"}, timeout_s=60):
            DeviceStatus.model_validate(doc)
            answered += 1
        return answered

    deadline = time.monotonic() + 120
    while (seen := await poll()) < devices and time.monotonic() < deadline:  # every queryable declared to us
        print(f"  {mode}: {seen:,}/{devices:,} devices answer so far", flush=True)
        await asyncio.sleep(0.5)
    times, answered = [], 0
    for _ in range(rounds):
        began = time.perf_counter()
        answered = await poll()
        times.append(time.perf_counter() - began)
    got = 0
    done = asyncio.Event()

    def on_telemetry(key: str, doc: Any) -> None:
        nonlocal got
        try:
            if signed:
                verifier.check(key, doc, ("telemetry",))
            else:
                DeviceStatus.model_validate(doc)
        except (MessageRejected, ValueError):
            return
        got += 1
        if got == devices:
            done.set()

    bus.subscribe(f"{keys.ROOT}/{SITE}/dev/*/telemetry", on_telemetry)
    await asyncio.sleep(1.0)
    began = time.perf_counter()
    child.stdin.write(b"telemetry\n")
    await child.stdin.drain()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 60)
    telemetry = time.perf_counter() - began if got == devices else float("nan")
    await child.stdout.readline()
    child.stdin.close()
    await child.wait()
    await bus.close()
    return times, telemetry, answered


async def main_async(devices: int, rounds: int) -> None:
    results: dict[str, tuple[list[float], float, int]] = {}
    for mode in MODES:
        print(f"running {mode} ({devices:,} devices, {rounds} polls) ...", flush=True)
        results[mode] = await run_mode(mode, devices, rounds)
    base = statistics.median(results["baseline"][0])
    base_tel = results["baseline"][1]
    print(f"\n{devices:,} simulated devices (modelled) in a farm process, controller in this one, loopback, "
          f"{os.cpu_count()} cores; median of {rounds} polls")
    for mode, (times, telemetry, answered) in results.items():
        poll = statistics.median(times)
        print(f"  {mode:8s} poll {poll:6.2f} s ({answered:,}/{devices:,} replies believed) = {poll / base:4.2f}x "
              f"baseline | telemetry {telemetry:6.2f} s = {telemetry / base_tel:4.2f}x baseline")
    signed = statistics.median(results["signed"][0])
    ok = signed < 10 and signed <= 1.5 * base and results["signed"][2] == devices
    print(f"goal (signed+verified poll of {devices:,} < 10 s and <= 1.5x the unauthenticated baseline): "
          f"{'met' if ok else 'NOT met'}")


def main() -> None:
    # zenoh calls back on its own threads; with thousands of nodes in one process the default 5 ms GIL switch
    # interval makes each callback wait for the event loop thread. Same setting in every mode.
    sys.setswitchinterval(0.0002)
    if len(sys.argv) == 5 and sys.argv[1] == "--farm":
        logging.basicConfig(level=logging.ERROR)
        asyncio.run(farm(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main_async(args.devices, args.rounds))


if __name__ == "__main__":
    main()
