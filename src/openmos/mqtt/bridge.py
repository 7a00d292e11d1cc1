"""One MQTT connection (aiomqtt) that publishes devices to Home Assistant and obeys their command topics.

Every message on a command topic is hostile until proven otherwise: retained commands are ignored (they
would replay at every reconnect), packets over ``MAX_PACKET`` bytes are not even sent to us (MQTT 5's Maximum
Packet Size, so the broker drops them), payloads over ``MAX_PAYLOAD`` bytes or not UTF-8 are dropped, a token
bucket bounds how many commands per second are looked at, the incoming queue is bounded, and each command
is parsed into a typed command of the control surface (which validates ranges) and only then executed.
The bridge acts with one role (``readonly`` or ``operator``), checked with the same ``Role`` rules as the
REST API: pause/resume, power target, profile and locate need ``operator``. Replies on ``.../result``
never echo the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from openmos.api.auth import Role
from openmos.base.ratelimit import TokenBucket
from openmos.control import (
    Command,
    DeviceControl,
    InvalidCommand,
    Locate,
    Pause,
    Resume,
    SetTarget,
    UnsupportedControl,
    command_from_wire,
)
from openmos.control.commands import MAX_WATTS, MIN_TARGET_W
from openmos.miner.config import MqttConfig
from openmos.mqtt.topics import CONTROLS, PROFILES, Topics, discovery_documents, slug, state_document

log = logging.getLogger(__name__)

MAX_PAYLOAD = 256
MAX_PACKET = 4096  # the largest MQTT packet the broker may send us (commands are <= MAX_PAYLOAD plus a topic)
MAX_QUEUE = 1000
COMMANDS_PER_S = 5.0
BURST = 20
# The REST API needs this role for the same actions (api/routers/actions.py, performance.py).
NEEDED_ROLE = {"mining": Role.OPERATOR, "power_target": Role.OPERATOR, "profile": Role.OPERATOR,
               "locate": Role.OPERATOR}


@dataclass
class DeviceSource:
    """One device to publish: its control surface, extra readings (shares, board temperatures) and limits."""

    control: DeviceControl
    extra: Callable[[], dict[str, Any]] = field(default=lambda: {})
    max_power_w: float | None = None


def parse_command(control: str, payload: str) -> Command:
    """The typed command for a payload on ``{device}/{control}/set``; ``InvalidCommand`` otherwise."""
    text = payload.strip()
    if control == "mining":
        if text == "ON":
            return Resume()
        if text == "OFF":
            return Pause()
        raise InvalidCommand("mining takes ON or OFF")
    if control == "power_target":
        try:
            return command_from_wire("set_power", {"watts": text})
        except InvalidCommand:
            raise InvalidCommand(f"power_target takes a number of watts between {MIN_TARGET_W:g} and "
                                 f"{MAX_WATTS:g}") from None
    if control == "profile":
        if text not in PROFILES:
            raise InvalidCommand(f"profile takes one of {', '.join(PROFILES)}")
        return SetTarget(profile=text)
    if control == "locate":
        if text != "PRESS":
            raise InvalidCommand("locate takes PRESS")
        return Locate(60.0)
    raise InvalidCommand("unknown control")


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """Server certificate and host name always verified; a client certificate when configured."""
    if not cfg.tls:
        return None
    ctx = ssl.create_default_context(cafile=cfg.ca_file)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


class MqttBridge:
    """Publish ``devices`` to the broker in ``cfg`` and obey their command topics (see ``topics``)."""

    def __init__(self, cfg: MqttConfig, devices: Sequence[DeviceSource], node: str | None = None) -> None:
        if not cfg.host:
            raise ValueError("MQTT needs a broker host ([mqtt] host)")
        self.cfg = cfg
        self.role = Role(cfg.role)
        self.topics = Topics(cfg.base_topic, cfg.discovery_prefix, slug(node or cfg.device_id or socket.gethostname()))
        self.devices = {slug(d.control.device_id): d for d in devices}
        self.stats: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bucket = TokenBucket(COMMANDS_PER_S, BURST)
        self._wake = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        cfg = self.cfg
        password = Path(cfg.password_file).read_text().strip() if cfg.password_file else None
        # MQTT 5 lets a client state the largest packet it accepts: the broker then drops bigger messages for
        # us instead of sending them (MQTT 3.1.1 brokers deliver up to 256 MB, which the client would buffer
        # whole before the bridge could drop it: 5 x 50 MB on a command topic took the process to 350 MB).
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.MaximumPacketSize = MAX_PACKET
        return aiomqtt.Client(
            cfg.host or "", cfg.port, username=cfg.username, password=password,
            identifier=f"openmos-{self.topics.node}", keepalive=30, timeout=10,
            will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
            tls_context=tls_context(cfg), max_queued_incoming_messages=MAX_QUEUE,
            max_queued_outgoing_messages=MAX_QUEUE, logger=log,
            protocol=aiomqtt.ProtocolVersion.V5, properties=connect)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="mqtt-bridge")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()  # the state loop ends at once
        if self._task is not None and not self.connected.is_set():
            self._task.cancel()  # still connecting (or waiting to retry): nothing to say goodbye to
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except asyncio.CancelledError:
                if not self._task.cancelled():
                    raise

    async def run(self) -> None:
        """Connect, publish, obey; reconnect with back-off until ``stop``."""
        backoff = 1.0
        while not self._stop.is_set():
            try:
                async with self._client() as client:
                    backoff = 1.0
                    self.last_error = None
                    await self._session(client)
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                self.connected.clear()
                self.last_error = str(exc)[:200]
                self.stats["connection_errors"] += 1
                log.warning("MQTT broker %s:%d: %s; retrying in %.0f s (check [mqtt] host, port, tls, "
                            "username and password_file)", self.cfg.host, self.cfg.port, self.last_error, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, 30.0)
        self.connected.clear()

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics.availability, b"online", qos=1, retain=True)
        await self._publish_discovery(client)
        await client.subscribe(self.topics.command_filter(), qos=1)
        await client.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)  # Home Assistant restarted
        self.connected.set()
        log.info("MQTT: publishing %d device(s) to %s:%d as %s (commands: %s)", len(self.devices), self.cfg.host,
                 self.cfg.port, self.topics.node, self.role.value)
        tasks = [asyncio.create_task(self._state_loop(client)), asyncio.create_task(self._messages(client)),
                 asyncio.create_task(self._stop.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
        with contextlib.suppress(aiomqtt.MqttError):  # a clean stop: say so (the will covers crashes)
            await client.publish(self.topics.availability, b"offline", qos=1, retain=True)

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        controls = self.role.allows(Role.OPERATOR)
        for name, dev in self.devices.items():
            c = dev.control
            docs = discovery_documents(self.topics, name, c.info(), c.get_data(), dev.extra(), controls=controls,
                                       target=c.capabilities.target, max_power_w=dev.max_power_w)
            for topic, doc in docs:
                await client.publish(topic, json.dumps(doc).encode(), qos=1, retain=True)
                self.stats["discovery"] += 1

    async def _publish_state(self, client: aiomqtt.Client, name: str) -> None:
        dev = self.devices[name]
        doc = state_document(dev.control.get_data(), dev.extra())
        await client.publish(self.topics.state(name), json.dumps(doc).encode(), qos=0, retain=True)
        self.stats["state"] += 1

    async def _state_loop(self, client: aiomqtt.Client) -> None:
        # Until stop, not merely until cancelled: a cancellation that lands in a publish can be swallowed there
        # (stop right after connecting then waited out its whole 10 s goodbye timeout while this loop went on).
        while not self._stop.is_set():
            self._wake.clear()  # before publishing: a change (or stop) during the publish is not missed
            for name in self.devices:
                await self._publish_state(client, name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.interval_s)

    async def _messages(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            if topic == f"{self.cfg.discovery_prefix}/status":  # Home Assistant (re)started
                if message.payload == b"online" and self._bucket.take():  # a flood must not become ours
                    await self._publish_discovery(client)
                continue
            await self._command(client, topic, message.payload, bool(message.retain))

    async def _command(self, client: aiomqtt.Client, topic: str, payload: object, retained: bool) -> None:
        parts = topic.split("/")
        if len(parts) != 4 or parts[3] != "set" or parts[1] not in self.devices or parts[2] not in CONTROLS:
            self.stats["dropped_unknown_topic"] += 1
            return
        name, control = parts[1], parts[2]
        if retained:  # a stored command would be obeyed again at every reconnect
            self.stats["dropped_retained"] += 1
            return
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_PAYLOAD:
            self.stats["dropped_oversize"] += 1
            return
        if not self._bucket.take():
            self.stats["dropped_rate"] += 1
            return
        result: dict[str, Any] = {"control": control}
        try:
            if not self.role.allows(NEEDED_ROLE[control]):
                raise PermissionError(f"MQTT commands are {self.role.value}: set [mqtt] role = \"operator\" to "
                                      "allow them")
            command = parse_command(control, bytes(payload).decode("utf-8"))
            ack = await self.devices[name].control.execute(command)
            result.update(ok=ack.ok, state=ack.state.value, message=ack.message[:200])
            self.stats["commands_ok"] += 1
            log.info("MQTT command %s on %s: %s", control, name, ack.message)
        except UnicodeDecodeError:
            result.update(ok=False, error="payload is not UTF-8")
        except (InvalidCommand, UnsupportedControl, PermissionError) as exc:
            result.update(ok=False, error=str(exc)[:200])
        if not result.get("ok"):
            self.stats["commands_refused"] += 1
        await client.publish(self.topics.result(name), json.dumps(result).encode(), qos=0)
        self._wake.set()  # publish the new state now
