"""``mos mqtt``: publish third-party miners (anything stock pyasic drives) to MQTT / Home Assistant.

An OpenMOS agent publishes itself (``[mqtt]`` in its config); this command bridges the other miners of a
site: each ``--miner`` address is identified with ``pyasic.get_miner``, polled through the fleet's pyasic
worker and published with the same topics, discovery and command rules (docs/mqtt.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from openmos.cli.display import stop_event
from openmos.miner.config import MqttConfig
from openmos.mqtt.bridge import DeviceSource, MqttBridge
from openmos.mqtt.topics import slug

log = logging.getLogger("openmos")


def configure(p: argparse.ArgumentParser, command: str) -> None:
    p.description = ("Bridges miners that stock pyasic can drive (Antminer stock, LuxOS, Braiins, Whatsminer, "
                     "Bitaxe...) to an MQTT broker with Home Assistant discovery. Topic layout and command rules: "
                     "docs/mqtt.md.")
    p.add_argument("--miner", action="append", required=True, metavar="IP", help="miner address (repeatable)")
    p.add_argument("--broker", required=True, help="MQTT broker host")
    p.add_argument("--port", type=int, default=1883, help="broker port (default %(default)s)")
    p.add_argument("--tls", action="store_true", help="TLS to the broker (certificate verified)")
    p.add_argument("--ca-file", type=Path, help="CA bundle for the broker certificate")
    p.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    p.add_argument("--key-file", type=Path, help="private key of the client certificate")
    p.add_argument("--username", help="broker user name (password: --password-file)")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--role", choices=["readonly", "operator"], default="readonly",
                   help="operator: obey pause/resume, power target, profile and locate (default: %(default)s)")
    p.add_argument("--node", default="site", help="bridge id in the availability topic (default: %(default)s)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between polls and state messages")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C)")


async def _serve(args: argparse.Namespace) -> int:
    import pyasic  # imported here: pyasic takes seconds to import and only this command needs it

    from openmos.fleet.workers.pyasic import PyasicWorker

    cfg = MqttConfig(host=args.broker, port=args.port, tls=args.tls, ca_file=_s(args.ca_file),
                     cert_file=_s(args.cert_file), key_file=_s(args.key_file), username=args.username,
                     password_file=_s(args.password_file), role=args.role, interval_s=args.interval)
    workers = []
    for ip in args.miner:
        miner = await pyasic.get_miner(ip)
        if miner is None:
            log.error("no miner answered at %s (pyasic could not identify it); skipped", ip)
            continue
        worker = PyasicWorker(miner, slug(ip.replace(".", "-")))
        worker.start(args.interval)
        workers.append(worker)
        log.info("%s: %s", ip, type(miner).__name__)
    if not workers:
        raise ValueError("none of the --miner addresses answered")
    bridge = MqttBridge(cfg, [DeviceSource(w) for w in workers], node=args.node)
    await bridge.start()
    try:
        await stop_event(args.duration).wait()
    finally:
        await bridge.stop()
        for w in workers:
            await w.stop()
    return 0


def _s(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))
