"""Energy as a service: the optimiser, cap loop and site fast path command real agents (their control
surface), in this process and over the signed fleet bus; decisions use only prices known before the
interval and are settled at the price that applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from openmos.base.net import free_local_port
from openmos.control import CurvePoint, RunState
from openmos.energy.economics import PriceFeed
from openmos.energy.optimizer import DispatchRules
from openmos.energy.service import EnergyService, member_curves
from openmos.energy.site import LocalLink, Site, SiteMember
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import FleetController
from openmos.fleet.energy import FleetLink
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.node import DeviceNode
from openmos.fleet.workers.openmos import AgentWorker
from openmos.hw.sim import SimClock
from openmos.hw.sim.backend import SimHardware
from openmos.miner import AgentConfig, MiningAgent
from openmos.miner.control import AgentControl
from openmos.security.signing import generate_keypair

from helpers import wait_for

POOLS = [{"name": "main", "pools": [{"url": "stratum+tcp://127.0.0.1:9", "user": "t.1"}]}]
FREE = DispatchRules(min_on_s=0, min_off_s=0, ramp_w_per_s=1e9, wear_cost_usd=0)


def agent(seed: int) -> MiningAgent:
    return MiningAgent(AgentConfig.from_dict({"groups": POOLS}), SimHardware("s21", seed=seed, clock=SimClock(0)))


def clocks(a: MiningAgent) -> list[float]:
    return sorted({c.frequency_mhz or 0.0 for b in a.hardware.telemetry().boards for c in b.chips})


def test_member_curves_use_the_tuner_curve_and_label_assumed_ones() -> None:
    tuned = SiteMember("t", 3000.0, (CurvePoint(1500, 110, "measured"), CurvePoint(2200, 150, "estimated"),
                                     CurvePoint(3000, 190, "measured"), CurvePoint(3400, 200, "estimated")))
    bare = SiteMember("b", 3500.0)
    curves, sources = member_curves([tuned, bare], assumed_j_per_th=20)
    assert sources == ["measured", "assumed"]
    assert curves.power_w[0, 0] == 1500 and curves.power_w[0, -1] == 3000  # never above the full target
    assert curves.hashrate_ths[0, -1] == pytest.approx(190)
    assert curves.hashrate_ths[1, -1] == pytest.approx(3500 / 20)


async def test_decisions_use_the_last_price_and_settle_at_the_real_one() -> None:
    agents = [agent(s) for s in range(3)]
    controls = [AgentControl(a, f"a{i}") for i, a in enumerate(agents)]
    feed = PriceFeed()
    feed.push(0.0, 0.03)
    feed.push(300.0, 5.00)  # a scarcity spike during the second interval: published only afterwards
    now = [300.0]
    service = EnergyService(Site(LocalLink(controls)), feed, 45.0, interval_s=300, rules=FREE, clock=lambda: now[0])
    first = await service.decide()
    assert first.price_basis == "last interval" and first.known_price == 0.03  # the spike was not yet known
    assert first.acknowledged == 3 and all(c.state is RunState.MINING for c in controls)
    now[0] = 600.0
    second = await service.decide()
    assert second.known_price == 5.00 and sum(second.planned_w.values()) == 0
    assert all(c.state is RunState.SLEEPING and c.agent.paused for c in controls)
    assert not any(b.enabled for a in agents for b in a.hardware.telemetry().boards)
    assert first.settled_price == 5.00 and first.cost_usd == pytest.approx(3 * 3.5 * 300 / 3600 * 5.0, rel=0.05)


@asynccontextmanager
async def fleet_buses(tmp_path: Path) -> AsyncIterator[tuple[FleetBus, FleetBus]]:
    """The fleet key pair in ``tmp_path``, a device bus on loopback and a controller bus connected to it."""
    generate_keypair(tmp_path / "fleet.pem", tmp_path / "fleet.pub")
    port = free_local_port()
    dev_bus = FleetBus(BusConfig(listen=[f"tcp/127.0.0.1:{port}"]))
    ctl_bus = FleetBus(BusConfig(connect=[f"tcp/127.0.0.1:{port}"]))
    await dev_bus.open()
    await ctl_bus.open()
    try:
        yield dev_bus, ctl_bus
    finally:
        await ctl_bus.close()
        await dev_bus.close()


@asynccontextmanager
async def lab_on_the_bus(tmp_path: Path, agents: list[MiningAgent]) -> AsyncIterator[tuple[FleetLink, Site]]:
    async with fleet_buses(tmp_path) as (dev_bus, ctl_bus):
        registry = EnrollmentRegistry(None)
        nodes = [DeviceNode(dev_bus, "lab", AgentWorker(a, f"agent-{i}"), [(tmp_path / "fleet.pub").read_bytes()],
                            interval_s=0.3) for i, a in enumerate(agents)]
        for node in nodes:
            await node.start()
            registry.pin("lab", node.device.device_id, node.public_key)
        controller = FleetController(ctl_bus, (tmp_path / "fleet.pem").read_bytes(), tmp_path / "audit.jsonl",
                                     registry=registry)
        link = FleetLink(controller, "lab")
        link.start()
        try:
            await wait_for(lambda: len(link._full_w) == len(agents), 20, "telemetry from every agent")
            assert await link.refresh() == len(agents)
            yield link, Site(link)
        finally:
            for node in nodes:
                await node.stop()


async def test_energy_curtails_real_agents_over_the_fleet_bus(tmp_path: Path) -> None:
    agents = [agent(10 + i) for i in range(3)]
    stock = clocks(agents[0])[0]
    async with lab_on_the_bus(tmp_path, agents) as (link, site):
        assert site.nameplate_w == pytest.approx(3 * agents[0].hardware.limits().nameplate_power_w)  # type: ignore[union-attr]
        fast = await site.set_fraction(0.5)  # the site fast path: one signed publication, acks on events
        assert fast.acknowledged == 3 and not fast.failed
        assert all(clocks(a) == [pytest.approx(stock * 0.5)] for a in agents)
        plan = await site.dispatch({"agent-0": 0.0, "agent-1": 3500.0, "agent-2": 1750.0})  # signed, per device
        assert plan.acknowledged == 3, plan
        assert agents[0].paused and not any(b.enabled for b in agents[0].hardware.telemetry().boards)
        assert clocks(agents[1]) == [pytest.approx(stock)] and clocks(agents[2]) == [pytest.approx(stock * 0.5)]
        members = {m.device_id: m for m in link.members()}
        assert set(members) == {"agent-0", "agent-1", "agent-2"} and members["agent-0"].curve == ()
        refused = await link.controller.command("lab", "agent-1", "curtail", {"fraction": float("nan")}, "t")
        assert refused.get("ok") is False  # hostile values are refused on the device, which stays up


def test_site_config_is_validated(tmp_path: Path) -> None:
    from openmos.energy.config import SiteConfig

    bad = tmp_path / "site.toml"
    bad.write_text('site = "lab"\nhashprice_usd_per_ph_day = 45\ncap_w = 1000\n[price]\nfixed_usd_per_kwh = 0.05\n'
                   '[fleet]\ndir = "fleet"\nconnect = ["tcp/127.0.0.1:1"]\n')
    with pytest.raises(ValueError, match="cap_w needs a"):
        SiteConfig.load(bad)
    bad.write_text('site = "../x"\nhashprice_usd_per_ph_day = 1e400\n[price]\nfixed_usd_per_kwh = 0.05\ntou = {}\n'
                   '[fleet]\ndir = "f"\nconnect = []\n')
    with pytest.raises(ValueError) as err:
        SiteConfig.load(bad)
    assert "site" in str(err.value) and "price" in str(err.value) and "fleet.connect" in str(err.value)


async def test_mos_energy_run_sleeps_agents_over_the_fleet_bus_when_power_is_too_dear(tmp_path: Path) -> None:
    """`mos energy run --config site.toml` against enrolled agents on a mutual-TLS fleet bus."""
    import asyncio

    from openmos.cli.main import main
    from openmos.fleet.pki import FleetDir

    fleet_dir = FleetDir(tmp_path / "fleet")
    fleet_dir.init()
    endpoint = f"tls/127.0.0.1:{free_local_port()}"
    bus = FleetBus(BusConfig(listen=[endpoint], tls=fleet_dir.ca().issue("device", "lab"), role="device"))
    await bus.open()
    agents = [agent(30 + i) for i in range(2)]
    registry = EnrollmentRegistry(fleet_dir.enrollment)
    nodes = [DeviceNode(bus, "lab", AgentWorker(a, f"agent-{i}"), [fleet_dir.command_pub.read_bytes()],
                        interval_s=0.5) for i, a in enumerate(agents)]
    for node in nodes:
        await node.start()
        registry.pin("lab", node.device.device_id, node.public_key)
    (tmp_path / "site.toml").write_text(
        f'site = "lab"\ninterval_s = 5\nhashprice_usd_per_ph_day = 45.0\n[price]\nfixed_usd_per_kwh = 2.5\n'
        f'[rules]\nmin_on_s = 0\nmin_off_s = 0\nramp_w_per_s = 100000\n'
        f'[fleet]\ndir = "fleet"\nconnect = ["{endpoint}"]\n')
    try:
        code = await asyncio.to_thread(main, ["energy", "run", "--config", str(tmp_path / "site.toml"),
                                              "--duration", "6"])
        assert code == 0
        assert all(a.paused for a in agents)  # $2.5/kWh: every S21 loses money, so energy put them to sleep
        assert not any(b.enabled for a in agents for b in a.hardware.telemetry().boards)
    finally:
        for node in nodes:
            await node.stop()
        await bus.close()


async def test_energy_sleeps_a_pyasic_managed_miner_over_the_fleet_bus(tmp_path: Path) -> None:
    """A third-party miner (LuxOS through stock pyasic) on the bus is planned and commanded like an agent."""
    from pyasic.miners.antminer.luxos.X21.S21 import LUXMinerS21

    from openmos.fleet.workers.pyasic import PyasicWorker

    from mock_luxos import MockLuxOS

    mock = MockLuxOS()
    await mock.start()
    miner = LUXMinerS21("127.0.0.8")
    miner.rpc.port = mock.port
    worker = PyasicWorker(miner, "lux-1", full_power_w=3500.0)
    worker.start(interval_s=0.5)
    try:
        async with fleet_buses(tmp_path) as (dev_bus, ctl_bus):
            node = DeviceNode(dev_bus, "lab", worker, [(tmp_path / "fleet.pub").read_bytes()], interval_s=0.3)
            registry = EnrollmentRegistry(None)
            try:
                await wait_for(lambda: worker.get_data().hashrate_ths > 0, 20, "the first pyasic reading")
                await node.start()
                registry.pin("lab", "lux-1", node.public_key)
                link = FleetLink(FleetController(ctl_bus, (tmp_path / "fleet.pem").read_bytes(),
                                                 tmp_path / "a.jsonl", registry=registry), "lab")
                link.start()
                await wait_for(lambda: bool(link.members()), 20, "the miner's telemetry")
                service = EnergyService(Site(link), PriceFeed([0.0], [2.5]), 45.0, interval_s=300, rules=FREE,
                                        clock=lambda: 600.0)
                decision = await service.decide()
                assert decision.planned_w == {"lux-1": 0.0} and decision.acknowledged == 1
                assert mock.sleeping and "logon" in mock.commands  # pyasic's LuxOS session-gated sleep ran
            finally:
                await node.stop()
                await worker.stop()
    finally:
        await mock.stop()
