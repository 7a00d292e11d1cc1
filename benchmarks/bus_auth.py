"""Fleet bus authentication cost: 10,000 devices polled with every reply signed by its device key and
verified against the enrolled key (plus schema validation), against the same poll unauthenticated, measured
in the same run.

Every device is a real bus node (simulated device, modelled figures) answering its own
``openmos/bench/dev/<id>/status`` queryable; the controller sends one wildcard query and waits for all
replies. Three runs on loopback, same devices, same schema validation on the controller:

  baseline  plain TCP, unsigned replies         (the bus before issue 12)
  tls       mutual TLS, unsigned replies        (transport cost alone)
  signed    mutual TLS, ed25519-signed replies verified against the pinned key (what ships)

Then the same for one telemetry publication per device (signed + verified vs plain).
Goal: signed poll of 10k devices < 10 s and <= 1.5x the baseline.

Usage: python benchmarks/bus_auth.py [--devices 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

from openmos.base.net import free_local_port
from openmos.fleet import keys
from openmos.fleet.bus import BusConfig, FleetBus, QueryHandler
from openmos.fleet.control import FleetController
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.messages import DeviceStatus, MessageRejected
from openmos.fleet.node import DeviceNode
from openmos.fleet.pki import FleetCA
from openmos.fleet.trust import DeviceVerifier
from openmos.testbed.device import SimulatedFleetDevice

SITE = "bench"


async def buses(tls: bool) -> tuple[FleetBus, FleetBus]:
    ca = FleetCA.create()
    proto = "tls" if tls else "tcp"
    endpoint = f"{proto}/127.0.0.1:{free_local_port()}"
    controller = FleetBus(BusConfig(listen=[endpoint], tls=ca.issue("controller") if tls else None,
                                    role="controller" if tls else None))
    site = FleetBus(BusConfig(connect=[endpoint], tls=ca.issue("device", SITE) if tls else None,
                              role="device" if tls else None))
    await controller.open()
    await site.open()
    deadline = time.monotonic() + 20
    while not site.peers() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return controller, site


async def run_mode(mode: str, devices: int, rounds: int) -> tuple[list[float], float, int]:
    """(poll seconds per round, telemetry seconds, replies verified in the last round)."""
    controller_bus, site_bus = await buses(tls=mode != "baseline")
    registry = EnrollmentRegistry(None)
    nodes = [DeviceNode(site_bus, SITE, SimulatedFleetDevice(f"d{i:05d}"), []) for i in range(devices)]
    registry.pin_many([(SITE, n.device.device_id, n.public_key) for n in nodes])
    verifier = DeviceVerifier(registry, controller_bus.metrics, rate_per_s=100, burst=100)
    ctl = FleetController(controller_bus, b"", Path(os.devnull), registry=registry, verifier=verifier)
    signed = mode == "signed"

    def plain_status(node: DeviceNode) -> QueryHandler:
        async def handler(key: str, params: dict[str, Any]) -> dict[str, Any]:
            return node.device.status()
        return handler

    for node in nodes:
        key = keys.status(SITE, node.device.device_id)
        site_bus.serve(key, node._status if signed else plain_status(node))
    await asyncio.sleep(2.0)  # declarations propagate
    selector = f"{keys.ROOT}/{SITE}/dev/*/status"
    times, answered = [], 0
    for _ in range(rounds):
        began = time.perf_counter()
        if signed:
            answered = len(await ctl._verified_query(selector, "status", timeout_s=60))
        else:
            answered = 0
            for _key, doc in await controller_bus.query(selector, {"nonce": "unauthenticated"}, timeout_s=60):
                DeviceStatus.model_validate(doc)
                answered += 1
        times.append(time.perf_counter() - began)
    # Telemetry: one publication per device, the controller checks each as the service does.
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

    controller_bus.subscribe(f"{keys.ROOT}/{SITE}/dev/*/telemetry", on_telemetry)
    await asyncio.sleep(1.0)
    began = time.perf_counter()
    for node in nodes:
        key = keys.telemetry(SITE, node.device.device_id)
        site_bus.publish(key, node.sign("telemetry", node.device.status()) if signed else node.device.status())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 60)
    telemetry = time.perf_counter() - began if got == devices else float("nan")
    await site_bus.close()
    await controller_bus.close()
    return times, telemetry, answered


async def main_async(devices: int, rounds: int) -> None:
    results: dict[str, tuple[list[float], float, int]] = {}
    for mode in ("baseline", "tls", "signed"):
        print(f"running {mode} ({devices:,} devices, {rounds} polls) ...", flush=True)
        results[mode] = await run_mode(mode, devices, rounds)
    base = statistics.median(results["baseline"][0])
    base_tel = results["baseline"][1]
    print(f"\n{devices:,} simulated devices (modelled), loopback, 2-core machine; median of {rounds} polls")
    for mode, (times, telemetry, answered) in results.items():
        poll = statistics.median(times)
        print(f"  {mode:8s} poll {poll:6.2f} s ({answered:,}/{devices:,} replies believed) = {poll / base:4.2f}x "
              f"baseline | telemetry {telemetry:6.2f} s = {telemetry / base_tel:4.2f}x baseline")
    signed = statistics.median(results["signed"][0])
    ok = signed < 10 and signed <= 1.5 * base and results["signed"][2] == devices
    print(f"goal (signed+verified poll of {devices:,} < 10 s and <= 1.5x the unauthenticated baseline): "
          f"{'met' if ok else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main_async(args.devices, args.rounds))


if __name__ == "__main__":
    main()
