"""MQTT with Home Assistant discovery against Debian's mosquitto on loopback: discovery, state, availability
(last will), commands through the control surface with the role rules, hostile payloads, passwords, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from mosquitto import MOSQUITTO, Broker
from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.miner import AgentConfig, MiningAgent
from openmos.miner.config import MqttConfig
from openmos.mqtt.agent import agent_source
from openmos.mqtt.bridge import MqttBridge
from openmos.pool import LocalPool

from helpers import cpu_agent, easy_pool_settings, running, wait_for

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="Debian mosquitto not installed (make browser)")


class Watcher:
    """A plain MQTT client that records every message (what Home Assistant would see)."""

    def __init__(self, port: int, **kw: Any) -> None:
        self.port, self.kw = port, kw
        self.last: dict[str, bytes] = {}
        self.seen: list[tuple[str, bytes]] = []
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.client: aiomqtt.Client | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, **self.kw) as client:
            self.client = client
            await client.subscribe("#")
            self.ready.set()
            async for m in client.messages:
                payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else str(m.payload).encode()
                self.last[m.topic.value] = payload
                self.seen.append((m.topic.value, payload))

    async def __aenter__(self) -> Watcher:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self.task

    async def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1, retain=retain)

    def json(self, topic: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.last[topic])
        return doc


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


@contextlib.asynccontextmanager
async def mining_agent(hardware: str = "cpu") -> AsyncIterator[MiningAgent]:
    pool = LocalPool(easy_pool_settings())
    async with running(pool):
        agent = cpu_agent(pool.url, user="ha.rig")
        async with running(agent):
            yield agent


def idle_agent() -> MiningAgent:
    """An agent that is not started: enough for tests about the connection, not about mining."""
    config = AgentConfig.from_dict({"hardware": "cpu:1", "groups": [{"pools": [
        {"url": "stratum+tcp://127.0.0.1:1", "user": "idle"}]}]})
    return MiningAgent(config, CpuHardware(CpuSettings(workers=1)))


def mqtt_config(port: int, **kw: Any) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, interval_s=1.0, **kw)


@contextlib.asynccontextmanager
async def connected(bridge: MqttBridge) -> AsyncIterator[MqttBridge]:
    """Start ``bridge``, wait until it is connected to the broker, stop it on the way out."""
    await bridge.start()
    try:
        await asyncio.wait_for(bridge.connected.wait(), 30)
        yield bridge
    finally:
        await bridge.stop()


async def test_a_bridge_stopped_right_after_connecting_says_goodbye(broker: Broker) -> None:
    """Stopped at once: the state loop used to go on publishing (the cancellation was lost in a publish) until
    the 10 s goodbye timeout cancelled the whole session, so no "offline" was published and, the disconnect being
    clean, no will either: Home Assistant kept showing the device online."""
    bridge = MqttBridge(mqtt_config(broker.port), [agent_source(idle_agent(), "rig-9")], node="rig-9")
    async with connected(bridge):
        pass
    assert bridge._task is not None and bridge._task.done() and not bridge._task.cancelled()
    async with Watcher(broker.port) as ha:
        avail = "openmos/bridge/rig-9/availability"
        await wait_for(lambda: avail in ha.last, 30, "the retained availability")
        assert ha.last[avail] == b"offline"


async def test_discovery_state_and_commands_through_the_control_surface(broker: Broker) -> None:
    async with Watcher(broker.port) as ha, mining_agent() as agent:
        bridge = MqttBridge(mqtt_config(broker.port, role="operator"), [agent_source(agent, "rig-1")], node="rig-1")
        async with connected(bridge):
            avail = "openmos/bridge/rig-1/availability"
            await wait_for(lambda: ha.last.get(avail) == b"online", 30, "availability online")
            configs = {t: json.loads(p) for t, p in ha.last.items() if t.startswith("homeassistant/")}
            kinds = {(t.split("/")[1], t.split("/")[3]) for t in configs}
            assert {("sensor", "hashrate"), ("sensor", "power"), ("sensor", "efficiency"),
                    ("sensor", "temperature"), ("sensor", "pool"), ("sensor", "accepted"), ("sensor", "rejected"),
                    ("binary_sensor", "health"), ("switch", "mining"), ("button", "locate")} <= kinds, kinds
            for doc in configs.values():  # every entity is tied to the device and its availability
                assert doc["availability_topic"] == avail and doc["device"]["identifiers"] == ["openmos_rig-1"]
                assert doc["unique_id"].startswith("openmos_rig-1_")
            state = "openmos/rig-1/state"
            await wait_for(lambda: state in ha.last and ha.json(state)["accepted"] >= 1
                           and (ha.json(state)["hashrate_ths"] or 0) > 0, 90, "state with accepted shares")
            doc = ha.json(state)
            assert doc["mining"] == "ON" and doc["healthy"] is True and doc["pool"].startswith("stratum+tcp://")
            # Pause from Home Assistant: the agent really stops; the switch state follows.
            await ha.send("openmos/rig-1/mining/set", b"OFF")
            await wait_for(lambda: agent.paused, 30, "agent paused over MQTT")
            await wait_for(lambda: ha.json(state)["mining"] == "OFF", 30, "switch state OFF")
            assert json.loads(ha.last["openmos/rig-1/result"])["ok"] is True
            await ha.send("openmos/rig-1/mining/set", b"ON")
            await wait_for(lambda: not agent.paused, 30, "agent resumed over MQTT")
            await ha.send("openmos/rig-1/locate/set", b"PRESS")
            await wait_for(lambda: ha.json(state)["locate"] is True, 30, "locating")
            # No autotuner on the CPU: a power target is refused by the surface, with a reason.
            await ha.send("openmos/rig-1/power_target/set", b"900")
            await wait_for(lambda: "power" in json.loads(ha.last.get("openmos/rig-1/result", b"{}")).get(
                "error", "") or "target" in json.loads(ha.last.get("openmos/rig-1/result", b"{}")).get("error", ""),
                30, "refusal of a power target without a tuner")
        await wait_for(lambda: ha.last.get(avail) == b"offline", 30, "offline after a clean stop")


async def test_readonly_role_publishes_but_obeys_nothing(broker: Broker) -> None:
    agent = idle_agent()
    async with Watcher(broker.port) as ha:
        bridge = MqttBridge(mqtt_config(broker.port), [agent_source(agent, "rig-2")], node="rig-2")  # readonly
        async with connected(bridge):
            await wait_for(lambda: "openmos/rig-2/state" in ha.last, 30, "state")
            assert not any("/switch/" in t or "/button/" in t or "/number/" in t for t in ha.last)
            await ha.send("openmos/rig-2/mining/set", b"OFF")
            await wait_for(lambda: "openmos/rig-2/result" in ha.last, 30, "refusal")
            result = json.loads(ha.last["openmos/rig-2/result"])
            assert result["ok"] is False and "readonly" in result["error"] and not agent.paused


async def test_hostile_payloads(broker: Broker) -> None:
    async with Watcher(broker.port) as ha, mining_agent() as agent:
        # A retained "OFF" waiting on the broker must not pause the agent at every (re)connect.
        await ha.send("openmos/rig-3/mining/set", b"OFF", retain=True)
        bridge = MqttBridge(mqtt_config(broker.port, role="operator"), [agent_source(agent, "rig-3")], node="rig-3")
        async with connected(bridge):
            await wait_for(lambda: bridge.stats["dropped_retained"] >= 1, 30, "retained command dropped")
            assert not agent.paused
            bad = [b"\xff\xfe\x00", b"NaN", b"1e400", b"-5", b"inf", b"0", b"abc", b"9" * 300, b"{}" * 100,
                   b'{"watts": 500}', b""]
            for payload in bad:
                await ha.send("openmos/rig-3/power_target/set", payload)
            for payload in (b"on", b"OFF\x00", b"PAUSE", b"\x00" * 200):
                await ha.send("openmos/rig-3/mining/set", payload)
            await ha.send("openmos/rig-3/profile/set", b"turbo; rm -rf /")
            await ha.send("openmos/rig-3/locate/set", b"x" * 100_000)  # oversize
            for topic in ("openmos/other/mining/set", "openmos/rig-3/reboot/set", "openmos/rig-3/mining/set/x",
                          "openmos/+/mining/set"):
                with contextlib.suppress(aiomqtt.MqttError, ValueError):
                    await ha.send(topic, b"OFF")
            await wait_for(lambda: bridge.stats["commands_refused"] + bridge.stats["dropped_oversize"]
                           + bridge.stats["dropped_unknown_topic"] >= 15, 30, "every hostile message handled")
            assert not agent.paused and bridge.stats["commands_ok"] == 0
            results = [json.loads(p) for t, p in ha.seen if t == "openmos/rig-3/result"]
            assert results and all(r["ok"] is False for r in results)
            text = json.dumps(results)
            assert "rm -rf" not in text and "1e400" not in text and "999999" not in text  # input never echoed
            # A flood: the bridge rate-limits, keeps memory bounded and stays up.
            await asyncio.gather(*(ha.send("openmos/rig-3/locate/set", b"PRESS") for _ in range(500)))
            await wait_for(lambda: bridge.stats["dropped_rate"] > 100, 60, "rate limit under a flood")
            assert bridge.connected.is_set()
            # Still obeys once the flood is over (a client retries while the rate limit refills).
            for _ in range(60):
                await ha.send("openmos/rig-3/mining/set", b"OFF")
                with contextlib.suppress(AssertionError):
                    await wait_for(lambda: agent.paused, 1, "pause")
                if agent.paused:
                    break
            assert agent.paused, bridge.stats


async def test_oversize_messages_are_not_even_delivered(broker: Broker) -> None:
    """A 1 MB command was delivered whole (MQTT 3.1.1 brokers pass up to 256 MB) and buffered by the client
    before the bridge dropped it: 5 x 50 MB took the process to 350 MB. The bridge connects with MQTT 5 and a
    Maximum Packet Size, so the broker drops such messages for it; commands still arrive."""
    async with Watcher(broker.port) as ha:
        agent = idle_agent()
        bridge = MqttBridge(mqtt_config(broker.port, role="operator"), [agent_source(agent, "rig-5")], node="rig-5")
        async with connected(bridge):
            await ha.send("openmos/rig-5/locate/set", b"x" * (1 << 20))
            await ha.send("openmos/rig-5/power_target/set", b"NaN")
            await wait_for(lambda: bridge.stats["commands_refused"] >= 1, 30, "the small command")
            assert bridge.stats["dropped_oversize"] == 0 and bridge.connected.is_set()


async def test_last_will_marks_a_killed_agent_offline(broker: Broker, tmp_path: Path) -> None:
    """`mos run` with [mqtt]: killed with SIGKILL, the broker publishes its will (offline)."""
    pool = LocalPool(easy_pool_settings())
    await pool.start()
    config = tmp_path / "agent.toml"
    AgentConfig.from_dict({"hardware": "cpu:1", "groups": [{"pools": [{"url": pool.url, "user": "ha.rig"}]}],
                           "mqtt": {"host": "127.0.0.1", "port": broker.port, "device_id": "killme",
                                    "interval_s": 1}}).save(config)
    proc = subprocess.Popen([sys.executable, "-m", "openmos.cli.main", "run", "--config", str(config), "--no-api",
                             "--no-status", "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        async with Watcher(broker.port) as ha:
            avail = "openmos/bridge/killme/availability"
            await wait_for(lambda: ha.last.get(avail) == b"online", 90, "agent online")
            await wait_for(lambda: "homeassistant/sensor/openmos_killme/hashrate/config" in ha.last, 30, "discovery")
            os.killpg(proc.pid, signal.SIGKILL)
            await wait_for(lambda: ha.last.get(avail) == b"offline", 90, "will published")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        await pool.stop()


async def test_broker_credentials(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "b", password=("openmos", "s3cret-pass"))
    try:
        agent = idle_agent()
        (tmp_path / "wrong").write_text("guess\n")
        bad = MqttBridge(mqtt_config(broker.port, username="openmos", password_file=str(tmp_path / "wrong")),
                         [agent_source(agent, "rig-4")], node="rig-4")
        await bad.start()
        await wait_for(lambda: bad.stats["connection_errors"] >= 1, 30, "refused login")
        assert not bad.connected.is_set() and bad.last_error
        await bad.stop()
        (tmp_path / "right").write_text("s3cret-pass\n")
        good = MqttBridge(mqtt_config(broker.port, username="openmos", password_file=str(tmp_path / "right")),
                          [agent_source(agent, "rig-4")], node="rig-4")
        async with connected(good), Watcher(broker.port, username="openmos", password="s3cret-pass") as ha:
            await wait_for(lambda: "openmos/rig-4/state" in ha.last, 30, "state with credentials")
    finally:
        broker.stop()


def make_tls(tmp: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test mqtt ca")).issuer_name(name("test mqtt ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def test_tls_broker_is_verified(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    ca, cert, key = make_tls(tmp_path)
    broker = Broker(tmp_path / "b", tls=(ca, cert, key))
    try:
        agent = idle_agent()
        # Without the CA the broker's certificate is not trusted: no connection, no data sent.
        untrusted = MqttBridge(mqtt_config(broker.port, tls=True), [agent_source(agent, "rig-5")], node="rig-5")
        await untrusted.start()
        await wait_for(lambda: untrusted.stats["connection_errors"] >= 1, 30, "certificate refused")
        assert not untrusted.connected.is_set()
        await untrusted.stop()
        trusted = MqttBridge(mqtt_config(broker.port, tls=True, ca_file=str(ca)), [agent_source(agent, "rig-5")],
                             node="rig-5")
        async with connected(trusted):
            assert trusted.connected.is_set()
    finally:
        broker.stop()


async def test_power_target_and_profile_reach_the_autotuner(broker: Broker) -> None:
    from openmos.hw.factory import create_hardware

    pool = LocalPool(easy_pool_settings())
    await pool.start()
    config = AgentConfig.from_dict({"hardware": "sim:s21", "performance": {"profile": "eco"},
                                    "groups": [{"pools": [{"url": pool.url, "user": "ha.sim"}]}]})
    agent = MiningAgent(config, create_hardware("sim:s21"))
    await agent.start()
    try:
        async with Watcher(broker.port) as ha:
            bridge = MqttBridge(mqtt_config(broker.port, role="operator"), [agent_source(agent, "sim-1")],
                                node="sim-1")
            async with connected(bridge):
                number = "homeassistant/number/openmos_sim-1/power_target/config"
                await wait_for(lambda: number in ha.last, 30, "power target entity")
                assert ha.json(number)["max"] > 1000  # the simulated S21's nameplate power
                assert "homeassistant/select/openmos_sim-1/profile/config" in ha.last
                state = "openmos/sim-1/state"
                await wait_for(lambda: state in ha.last and ha.json(state).get("profile") == "eco", 30, "eco profile")
                assert ha.json(state)["modelled"] is True
                await ha.send("openmos/sim-1/power_target/set", b"2500")
                await wait_for(lambda: agent.tuner is not None and agent.tuner.base_target.value == 2500, 30,
                               "power target applied by the tuner")
                await wait_for(lambda: ha.json(state).get("power_target_w") == 2500, 30, "state shows 2500 W")
                await ha.send("openmos/sim-1/profile/set", b"performance")
                await wait_for(lambda: ha.json(state).get("profile") == "performance", 30, "performance profile")
    finally:
        await agent.stop()
        await pool.stop()


async def test_a_third_party_miner_through_pyasic_is_published_and_obeys(broker: Broker) -> None:
    """The bridge takes any control surface: a LuxOS miner driven by stock pyasic (fleet worker) too."""
    from pyasic.miners.antminer.luxos.X21.S21 import LUXMinerS21

    from openmos.fleet.workers.pyasic import PyasicWorker
    from openmos.mqtt.bridge import DeviceSource

    from mock_luxos import MockLuxOS

    mock = MockLuxOS()
    await mock.start()
    try:
        miner = LUXMinerS21("127.0.0.8")
        miner.rpc.port = mock.port
        worker = PyasicWorker(miner, "lux-1")
        await worker.refresh()
        async with Watcher(broker.port) as ha:
            bridge = MqttBridge(mqtt_config(broker.port, role="operator"), [DeviceSource(worker)], node="site-a")
            async with connected(bridge):
                state = "openmos/lux-1/state"
                await wait_for(lambda: state in ha.last and (ha.json(state)["hashrate_ths"] or 0) > 190, 30,
                               "the LuxOS miner's readings")
                assert ha.json(state)["power_w"] == 3480
                assert "homeassistant/switch/openmos_lux-1/mining/config" in ha.last
                await ha.send("openmos/lux-1/mining/set", b"OFF")
                await wait_for(lambda: mock.sleeping, 30, "the LuxOS miner asleep")
    finally:
        await mock.stop()


async def test_mos_mqtt_bridges_a_miner_found_by_stock_pyasic(broker: Broker) -> None:
    """`mos mqtt --miner IP`: pyasic identifies the miner (here an OpenMOS device on its own 127.x:4028,
    read in the LuxOS dialect) and its readings reach Home Assistant's topics; SIGTERM stops it cleanly."""
    from test_pyasic_stock import loopback_with_4028_free

    from api_stack import running_device

    ip = loopback_with_4028_free()
    async with running_device(allow=["127.0.0.1/32"], performance={"power_w": 3000}, cgminer_host=ip,
                              cgminer_port=4028), Watcher(broker.port) as ha:
        device = ip.replace(".", "-")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "openmos.cli.main", "mqtt", "--miner", ip, "--broker", "127.0.0.1", "--port",
            str(broker.port), "--interval", "1", "--node", "lab", "--duration", "600",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            state = f"openmos/{device}/state"
            await wait_for(lambda: state in ha.last and (ha.json(state)["hashrate_ths"] or 0) > 100, 60,
                           "the miner's readings via pyasic")
            assert f"homeassistant/sensor/openmos_{device}/hashrate/config" in ha.last
            assert not any(t.startswith("homeassistant/switch/") for t in ha.last)  # readonly by default
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await wait_for(lambda: ha.last.get("openmos/bridge/lab/availability") == b"offline", 30, "clean offline")
