"""Energy: economics, optimiser, Modbus meter cap loop with failure fallback, OpenADR demand response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openleadr import OpenADRServer

from openmos.base.net import free_local_port
from openmos.control import DeviceData, RunState
from openmos.energy.demand import DemandResponseVen
from openmos.energy.economics import (
    FixedPrice,
    PriceFeed,
    TimeOfUse,
    break_even_usd_per_kwh,
    hashprice_usd_per_ph_day,
    revenue_usd_per_th_hour,
)
from openmos.energy.modbus import DeviceUnavailable, ModbusPowerMeter
from openmos.energy.optimizer import DispatchRules, FleetCurves, FleetState, dispatch
from openmos.energy.simulate import hindsight_optimum, run_policy
from openmos.energy.site import CapController, CurtailResult, LocalLink, Site, SiteMember
from openmos.energy.traces import synthetic_market
from openmos.testbed.site import FleetSimSite, SiteMeter

from helpers import wait_for


def test_hashprice_and_break_even_match_the_reference_figures() -> None:
    # 2025-26 scale: ~$45/PH/day at $100k BTC, 0.02 BTC fees, difficulty 1.3e14.
    hp = hashprice_usd_per_ph_day(100_000, 1.3e14, fees_btc_per_block=0.02)
    assert 45 < hp < 55
    for jth, expected in ((13.5, 0.123), (17.5, 0.095), (21.5, 0.078), (29.5, 0.057)):
        assert break_even_usd_per_kwh(40.0, jth) == pytest.approx(expected, abs=0.001)
    assert revenue_usd_per_th_hour(48.0) == pytest.approx(0.002)
    with pytest.raises(ValueError):
        hashprice_usd_per_ph_day(1, 0)


def test_price_sources(tmp_path: Path) -> None:
    assert FixedPrice(0.05).price_usd_per_kwh(123) == 0.05
    tou = TimeOfUse({0: 0.04, 7: 0.09, 17: 0.18, 21: 0.09})
    assert [tou.price_usd_per_kwh(h * 3600) for h in (3, 8, 18, 22)] == [0.04, 0.09, 0.18, 0.09]
    csv = tmp_path / "prices.csv"
    csv.write_text("time,usd_per_kwh\n0,0.03\n3600,0.25\n")
    feed = PriceFeed.from_csv(csv)
    assert feed.price_usd_per_kwh(100) == 0.03 and feed.price_usd_per_kwh(4000) == 0.25
    with pytest.raises(LookupError):
        feed.price_usd_per_kwh(-1)
    csv.write_text("0,0.03\n10,abc\n")
    with pytest.raises(ValueError, match=r"prices\.csv:2"):
        PriceFeed.from_csv(csv)


def two_models(n: int = 10) -> FleetCurves:
    """Half efficient (15 J/TH at full power), half old (30 J/TH)."""
    frac = np.linspace(0.5, 1.0, 6)
    eff_p = 3500 * frac
    eff_h = eff_p / (15 * (0.85 + 0.15 * frac))
    old_p = 3100 * frac
    old_h = old_p / (30 * (0.85 + 0.15 * frac))
    return FleetCurves(np.vstack([np.tile(eff_p, (n, 1)), np.tile(old_p, (n, 1))]),
                       np.vstack([np.tile(eff_h, (n, 1)), np.tile(old_h, (n, 1))]))


def test_dispatch_prices_cap_and_efficiency_order() -> None:
    curves = two_models()
    rules = DispatchRules(min_on_s=0, min_off_s=0, ramp_w_per_s=1e9, wear_cost_usd=0)
    state = FleetState.all_on(curves)
    r = revenue_usd_per_th_hour(45.0)
    cheap = dispatch(curves, state, 0, 300, r, 0.03, rules)
    assert cheap.on.all() and np.allclose(cheap.power_w, curves.max_power_w)
    mid = dispatch(curves, state, 0, 300, r, 0.08, rules)  # above the old machines' break-even only
    assert mid.on[:10].all() and not mid.on[10:].any()
    pricey = dispatch(curves, state, 0, 300, r, 0.50, rules)
    assert not pricey.on.any()
    cap = 0.6 * curves.max_power_w.sum()
    capped = dispatch(curves, state, 0, 300, r, 0.03, rules, cap_w=cap)
    assert capped.power_w.sum() <= cap + 1e-6
    assert capped.power_w[:10].sum() > capped.power_w[10:].sum()  # the efficient machines run longest


def test_dispatch_honours_min_times_ramp_and_wear() -> None:
    curves = two_models(2)
    rules = DispatchRules(min_on_s=1800, min_off_s=1800, ramp_w_per_s=1.0, wear_cost_usd=1.0)
    r = revenue_usd_per_th_hour(45.0)
    state = FleetState(np.ones(4, bool), np.zeros(4), curves.max_power_w.copy())
    locked = dispatch(curves, state, 600, 300, r, 0.50, rules)  # switched on 10 min ago
    assert locked.on.all()
    assert np.all(locked.power_w >= curves.max_power_w - 300 * 1.0 - 1e-6)  # ramped, not dropped
    off = dispatch(curves, state, 4000, 300, r, 0.50, rules)
    assert not off.on.any()
    back = dispatch(curves, off, 4300, 300, r, 0.01, rules)  # off only 5 min: must stay off
    assert not back.on.any()


def test_online_policy_close_to_hindsight_on_a_small_site() -> None:
    curves = two_models(5)
    market = synthetic_market(days=3, seed=4)
    rules = DispatchRules()
    online = run_policy(curves, market, rules)
    peek = run_policy(curves, market, rules, peek=True)  # sees each interval's own price: not achievable live
    always = run_policy(curves, market, rules, always_on=True)
    best = hindsight_optimum(curves, market, rules)
    assert online.profit < peek.profit <= best + 1e-6
    assert online.profit >= 0.8 * best  # deciding on the last known price, settled at the real one
    assert online.profit > always.profit


@asynccontextmanager
async def simulated_site(n: int = 20, meter_period_s: float = 0.2
                         ) -> AsyncIterator[tuple[FleetSimSite, Site, SiteMeter]]:
    """``n`` simulated S21 (one vectorised physics model, each a control surface) and a Modbus site meter."""
    sim = FleetSimSite(n, seed=5)
    await sim.start(step_s=0.1)
    meter = SiteMeter(lambda: float(sim.watts.sum()), period_s=meter_period_s)
    await meter.start()
    try:
        yield sim, Site(LocalLink(sim.workers)), meter
    finally:
        await meter.stop()
        await sim.stop()


def fractions(sim: FleetSimSite) -> np.ndarray:
    return np.array([w.fraction for w in sim.workers])


async def test_meter_over_cap_steps_devices_down_then_meter_failure_holds() -> None:
    async with simulated_site(meter_period_s=0.1) as (sim, site, sim_meter):
        meter = ModbusPowerMeter("127.0.0.1", sim_meter.port)
        cap = 0.7 * float(sim.watts.sum())
        alerts: list[str] = []
        ctl = CapController(site, meter, cap, on_alert=alerts.append)
        for _ in range(60):
            await ctl.step()
            await asyncio.sleep(0.3)
            if ctl.last_reading_w is not None and ctl.last_reading_w <= cap and site.fraction < 0.95:
                break
        assert site.fraction < 0.95
        await asyncio.sleep(1.0)
        assert (await meter.read_power_w()) <= cap * 1.01
        safe = ctl.last_safe_fraction
        await sim_meter.stop()
        for _ in range(3):
            await ctl.step()
        assert not ctl.meter_ok and alerts and "holding the last safe level" in alerts[0]
        assert site.fraction <= safe  # never ramps up blind
        assert np.allclose(fractions(sim), site.fraction)
        await sim_meter.start(sim_meter.port)
        await ctl.step()
        assert ctl.meter_ok and "resumed" in alerts[-1]
        meter.close()


class RecordingLink:
    """A site of one 1 kW device that acknowledges every level at once (records them)."""

    def __init__(self) -> None:
        self.levels: list[float] = []

    def members(self) -> list[SiteMember]:
        return [SiteMember("a", 1000.0)]

    def nameplate_w(self) -> float:
        return 1000.0

    async def curtail_all(self, fraction: float) -> CurtailResult:
        self.levels.append(fraction)
        return CurtailResult(1000.0 * fraction, 1, [], 0.0)

    async def set_watts(self, watts: Mapping[str, float]) -> CurtailResult:
        raise AssertionError("not used")


class ApplyingLink(RecordingLink):
    """Devices that acknowledge a level at once (accepted) and report it applied later (``still``)."""

    def __init__(self) -> None:
        super().__init__()
        self.still = 0

    async def curtail_all(self, fraction: float) -> CurtailResult:
        self.levels.append(fraction)
        return CurtailResult(1000.0 * fraction, 1, [], 0.0, applying=lambda: self.still)


class ScriptedMeter:
    def __init__(self, readings: list[float]) -> None:
        self.readings = readings

    async def read_power_w(self) -> float:
        return self.readings.pop(0)


async def test_cap_loop_does_not_cut_again_on_readings_taken_while_devices_settle() -> None:
    link = RecordingLink()
    site = Site(link)
    # The meter still shows the old level for a while after the first cut (refresh, ramps, supply slew).
    ctl = CapController(site, ScriptedMeter([1000.0, 1000.0, 990.0, 700.0, 500.0, 500.0]), cap_w=600.0,
                        settle_s=3600.0, recover_after_s=3600.0)
    await ctl.step()
    assert link.levels == [pytest.approx(0.588)] and ctl.corrections == 1
    await ctl.step()
    await ctl.step()
    assert link.levels == [pytest.approx(0.588)]  # stale readings: no second cut (it would overshoot)
    site.changed_at -= 3601.0  # settled: a reading still over the cap is acted upon
    await ctl.step()
    assert len(link.levels) == 2 and link.levels[1] == pytest.approx(0.588 * 600 * 0.98 / 700)
    site.changed_at -= 3601.0
    await ctl.step()  # 500 W: well under the cap, but only just (devices may still be ramping): no raise yet
    assert len(link.levels) == 2 and ctl.low_since is not None
    ctl.low_since -= 3601.0
    await ctl.step()  # low for long enough: it recovers one step
    assert link.levels[-1] == pytest.approx(link.levels[1] + 0.02) and ctl.corrections == 3


async def test_cap_loop_waits_while_acknowledged_devices_still_apply_the_level() -> None:
    """An acknowledgement means accepted: while devices still report applying it, a reading over the cap is not
    acted upon (another cut would overshoot when they arrive) -- for ``apply_timeout_s`` at most."""
    link = ApplyingLink()
    site = Site(link)
    ctl = CapController(site, ScriptedMeter([1000.0] * 4), cap_w=600.0, settle_s=0.0, apply_timeout_s=3600.0,
                        recover_after_s=3600.0)
    await ctl.step()
    assert len(link.levels) == 1 and site.applying() == 0
    link.still = 1
    await ctl.step()
    assert len(link.levels) == 1  # one device still applying: hold
    site.changed_at -= 3601.0  # ... but not for ever
    await ctl.step()
    assert len(link.levels) == 2
    link.still = 0
    await ctl.step()  # all applied, settle_s over: a reading over the cap is acted upon at once
    assert len(link.levels) == 3


async def test_openadr_event_reduces_load_and_reports_are_sent() -> None:
    port = free_local_port()
    reports: list[float] = []
    responses: list[str] = []
    vtn = OpenADRServer(vtn_id="utility", http_host="127.0.0.1", http_port=port,
                        requested_poll_freq=timedelta(seconds=1), verify_message_signatures=False)

    async def register(info: dict[str, object]) -> tuple[str, str]:
        return "site-ven", "reg-1"

    # openleadr dispatches on these exact parameter names.
    async def register_report(ven_id: str, resource_id: str, measurement: str, unit: str, scale: str,
                              min_sampling_interval: timedelta, max_sampling_interval: timedelta
                              ) -> tuple[object, timedelta]:
        return (lambda data: reports.extend(v for _, v in data)), timedelta(seconds=1)

    vtn.add_handler("on_create_party_registration", register)
    vtn.add_handler("on_register_report", register_report)
    await vtn.run_async()
    async with simulated_site(n=10) as (sim, site, sim_meter):
        ven = DemandResponseVen(site, ModbusPowerMeter("127.0.0.1", sim_meter.port),
                                f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", report_interval_s=1)
        try:
            await ven.start()
            await wait_for(lambda: len(reports) >= 1, 20, "a load report at the VTN")
            full = reports[-1]
            assert full > 30_000
            vtn.add_event(ven_id="site-ven", signal_name="simple", signal_type="level",
                          intervals=[{"dtstart": datetime.now(UTC), "duration": timedelta(minutes=5),
                                      "signal_payload": 2.0}],
                          callback=lambda ven_id, event_id, opt_type: responses.append(opt_type))
            await wait_for(lambda: site.fraction == 0.5, 20, "the site to curtail to 50 %")
            await wait_for(lambda: bool(responses), 10, "the opt-in response")
            assert responses == ["optIn"] and np.allclose(fractions(sim), 0.5)
            await wait_for(lambda: bool(reports) and reports[-1] < 0.75 * full, 20, "the reduced load to be reported")
        finally:
            await ven.stop()
            await vtn.stop()


class Unreachable:
    """A device that does not answer (its connection is gone)."""

    device_id = "gone"

    def get_data(self) -> DeviceData:
        return DeviceData("gone", RunState.UNAVAILABLE, 0.0, None, full_power_w=3500.0, healthy=False)

    async def execute(self, command: object) -> object:
        raise ConnectionError("device unreachable")


async def test_fast_path_curtail_reaches_every_device() -> None:
    sim = FleetSimSite(200, seed=1)
    link = LocalLink(sim.workers)
    site = Site(link)
    result = await site.curtail_to_w(0.25 * site.nameplate_w)
    assert result.acknowledged == 200 and not result.failed
    assert np.allclose(fractions(sim), 0.25 * 0.96)  # aims 4 % under the cap
    link.devices["gone"] = Unreachable()  # type: ignore[assignment]
    result = await link.curtail_all(1.0)
    assert result.acknowledged == 200 and result.failed == ["gone"]
    assert (await site.set_fraction(float("nan"))).acknowledged == 200 and site.fraction == 0.0  # NaN: safe side


async def test_container_limits_feed_the_optimiser() -> None:
    """An immersion container over Modbus: its heat-rejection limit becomes a site cap for the optimiser."""
    from pymodbus.client.mixin import ModbusClientMixin
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    from openmos.energy.modbus import ContainerController

    values = {"supply": 40.0, "return": 52.0, "flow": 30.0, "capacity_kw": 60.0}

    async def action(fc: int, start: int, address: int, count: int, regs: list[int], _: object) -> None:
        for i, key in enumerate(("supply", "return", "flow", "capacity_kw")):
            words = ModbusClientMixin.convert_to_registers(values[key], ModbusClientMixin.DATATYPE.FLOAT32)
            for j, w in enumerate(words):
                if 0 <= 2 * i + j - start < len(regs):
                    regs[2 * i + j - start] = w

    port = free_local_port()
    server = ModbusTcpServer(SimDevice(id=1, simdata=[SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
                                       action=action), address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.3)
    try:
        container = ContainerController("127.0.0.1", port)
        assert await container.power_limit_w() == pytest.approx(60_000)
        values["supply"] = 50.0  # 5 C over the 45 C limit: derated 40 %
        assert await container.power_limit_w() == pytest.approx(36_000)
        values["flow"] = 0.0  # pumps stopped: nothing may run
        assert await container.power_limit_w() == 0.0
        values.update(flow=30.0, supply=40.0)
        cap = await container.power_limit_w()
        curves = two_models(10)
        rules = DispatchRules(min_on_s=0, min_off_s=0, ramp_w_per_s=1e9, wear_cost_usd=0)
        plan = dispatch(curves, FleetState.all_on(curves), 0, 300, revenue_usd_per_th_hour(45.0), 0.03, rules, cap)
        assert plan.power_w.sum() <= cap + 1e-6 and plan.power_w.sum() > 0.9 * cap
        container.close()
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        task.cancel()


def test_energy_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from openmos.cli.main import main

    assert main(["energy", "hashprice", "--btc-price", "100000", "--difficulty", "1.3e14", "--jth", "17.5"]) == 0
    assert "break-even" in capsys.readouterr().out
    plot = tmp_path / "e.png"
    assert main(["energy", "report", "--miners", "20", "--days", "2", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "perfect foresight" in out and plot.read_bytes()[:4] == b"\x89PNG"


async def test_a_meter_that_accepts_and_never_answers_is_unavailable_within_its_deadline() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # takes the request, never replies
        await asyncio.sleep(3600)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    meter = ModbusPowerMeter("127.0.0.1", port)
    meter.deadline_s = 0.5
    try:
        for _ in range(2):  # and again on the reconnect
            with pytest.raises(DeviceUnavailable):
                await asyncio.wait_for(meter.read_power_w(), 60)
    finally:
        meter.close()
        server.close()


@pytest.mark.parametrize("price", [float("nan"), float("inf"), -float("inf"), 1e300, -1e300])
def test_garbage_electricity_prices_are_refused(price: float, tmp_path: Path) -> None:
    """A site.toml tou of nan/inf/1e300 (TOML has nan and inf) or such a line in a price CSV was accepted; a NaN
    price makes every comparison the optimiser makes false."""
    from openmos.energy.config import PriceConfig
    from openmos.energy.economics import PriceFeed, TimeOfUse

    with pytest.raises(ValueError, match="finite"):
        TimeOfUse({0: 0.05, 7: price})
    with pytest.raises(ValueError, match="finite"):
        PriceFeed().push(1000.0, price)
    with pytest.raises(ValueError):  # pydantic's "finite number" or the price bounds, naming price.tou
        PriceConfig(tou={"0": 0.05, "7": price}).source(tmp_path)
    feed = tmp_path / "prices.csv"
    feed.write_text(f"time,usd_per_kwh\n0,0.05\n3600,{price!r}\n")
    with pytest.raises(ValueError, match=r"prices\.csv:3"):
        PriceFeed.from_csv(feed)
    with pytest.raises(ValueError, match="finite"):
        PriceFeed().push(float("nan"), 0.05)
    assert TimeOfUse({0: 0.05, 17: -0.02}).price_usd_per_kwh(18 * 3600) == -0.02  # negative prices do happen


async def test_hostile_openadr_events_are_not_acted_on() -> None:
    """Events come from the network. A SIMPLE payload of NaN or 1e400 raised out of the handler (int(nan));
    an unknown level (7) or a negative / NaN load curtailed the whole site to 0 %; every event was kept
    forever. Now such events are opted out of, naive or bogus times are taken as now / one hour, and only the
    last MAX_EVENTS events are kept."""
    from openmos.energy.demand import MAX_EVENTS

    sim = FleetSimSite(4, seed=1)
    site = Site(LocalLink(sim.workers))
    ven = DemandResponseVen(site, ModbusPowerMeter("127.0.0.1", 1), "http://127.0.0.1:1/OpenADR2/Simple/2.0b")

    def event(name: str, payload: object, **period: object) -> dict[str, Any]:
        return {"event_signals": [{"signal_name": name, "intervals": [{"signal_payload": payload}]}],
                "active_period": period}

    for name, payload in [("simple", float("nan")), ("simple", 1e400), ("simple", 7), ("simple", 1.5),
                          ("simple", -1), ("simple", True), ("simple", "2; rm"), ("load_dispatch", float("nan")),
                          ("load_dispatch", -5.0), ("load_dispatch", float("-inf")), ("load_dispatch", [1])]:
        assert ven.fraction_for(event(name, payload)) is None, (name, payload)
        assert await ven._on_event(event(name, payload)) == "optOut"
    assert ven.fraction_for(event("simple", 2.0)) == 0.5
    assert ven.fraction_for(event("load_dispatch", 1e400)) is None
    assert ven.fraction_for(event("load_dispatch", 1e300)) == 1.0
    # Naive and bogus times: acted on now, for an hour (a naive dtstart raised TypeError).
    assert await ven._on_event(event("simple", 1, dtstart=datetime(2030, 1, 1), duration="forever")) == "optIn"
    await wait_for(lambda: site.fraction == 0.75, 20, "the site at 75 %")
    for _ in range(3 * MAX_EVENTS):
        await ven._on_event(event("simple", 9))
    assert len(ven.events) == MAX_EVENTS
    for event_id in list(ven._timers):
        ven._forget(event_id)


async def test_a_hostile_modbus_meter_never_moves_the_site() -> None:
    """A real pymodbus server as a broken or hostile meter: NaN, inf, negative and 1e38 W words and exception
    answers. Before, one 1e38 W reading cut the whole site to ~0 % (and the recovery took ~25 minutes) and an
    inf cooler capacity lifted a container's limit to inf. Now each is a meter fault: the level is held, an
    alert says so, and control resumes on the next sane reading."""
    from pymodbus.client.mixin import ModbusClientMixin
    from pymodbus.constants import ExcCodes
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    from openmos.energy.modbus import ContainerController

    state: dict[str, Any] = {"values": [700.0] * 4, "refuse": False}

    async def action(fc: int, start: int, address: int, count: int, regs: list[int], _: object) -> ExcCodes | None:
        if state["refuse"]:
            return ExcCodes.DEVICE_FAILURE
        for i, value in enumerate(state["values"]):
            for j, w in enumerate(ModbusClientMixin.convert_to_registers(value, ModbusClientMixin.DATATYPE.FLOAT32)):
                if 0 <= 2 * i + j - start < len(regs):
                    regs[2 * i + j - start] = w
        return None

    port = free_local_port()
    server = ModbusTcpServer(SimDevice(id=1, simdata=[SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
                                       action=action), address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    meter = ModbusPowerMeter("127.0.0.1", port)
    container = ContainerController("127.0.0.1", port)
    try:
        for _ in range(100):  # the server is up once it answers
            try:
                assert await meter.read_power_w() == pytest.approx(700.0)
                break
            except DeviceUnavailable:
                await asyncio.sleep(0.1)
        link = RecordingLink()  # one 1 kW device
        alerts: list[str] = []
        ctl = CapController(Site(link), meter, cap_w=800.0, settle_s=0.0, on_alert=alerts.append)
        for hostile in (1e38, float("nan"), float("inf"), -5.0, 3e5, "refuse"):
            if hostile == "refuse":
                state["refuse"] = True
            else:
                state["values"][0] = hostile
            assert await ctl.step() == 1.0, hostile
            assert not ctl.meter_ok and link.levels == [], (hostile, link.levels)
        assert len(alerts) == 1 and "holding the last safe level" in alerts[0]
        state.update(refuse=False, values=[900.0] * 4)  # sane again, and over the cap: acted on
        await ctl.step()
        assert ctl.meter_ok and "resumed" in alerts[-1] and link.levels == [pytest.approx(800 * 0.98 / 900)]
        state["values"] = [50.0, 52.0, 30.0, 60.0]  # supply, return (C), flow (m3/h), cooler capacity (kW)
        assert await container.power_limit_w() == pytest.approx(60_000 * (1 - 0.08 * 5))
        for field, bad in ((3, float("inf")), (0, float("nan")), (2, float("nan"))):
            state["values"] = [40.0, 52.0, 30.0, 60.0]
            state["values"][field] = bad
            with pytest.raises(DeviceUnavailable, match="no finite number"):
                await container.power_limit_w()
    finally:
        meter.close()
        container.close()
        await server.shutdown()  # type: ignore[no-untyped-call]
        task.cancel()


async def test_openadr_cancellations_overlaps_and_floods() -> None:
    """A cancelled event (openleadr hands it to on_update_event, which was not handled) still curtailed the
    site; one shared restore timer let a later event's end stand for an earlier one's (the site stayed at 50 %
    for the later event's whole window); every event held its timers for ever. Now each event has its own
    window, the lowest level in force applies, a cancellation lifts it, and at most MAX_EVENTS are scheduled."""
    from openmos.energy.demand import MAX_EVENTS

    link = RecordingLink()
    site = Site(link)
    ven = DemandResponseVen(site, ModbusPowerMeter("127.0.0.1", 1), "http://127.0.0.1:1/OpenADR2/Simple/2.0b")
    assert ven.client.on_update_event == ven._on_event  # openleadr hands modifications and cancellations here

    def event(event_id: str, level: int, status: str = "active", **period: object) -> dict[str, Any]:
        return {"event_descriptor": {"event_id": event_id, "event_status": status},
                "event_signals": [{"signal_name": "simple", "intervals": [{"signal_payload": level}]}],
                "active_period": period}

    now = datetime.now(UTC)
    assert await ven._on_event(event("a", 2, dtstart=now, duration=timedelta(hours=1))) == "optIn"
    await wait_for(lambda: site.fraction == 0.5, 20, "event a in force")
    # b starts in an hour: before, its restore timer replaced a's, so a's 50 % stayed until b's end.
    assert await ven._on_event(event("b", 1, dtstart=now + timedelta(hours=1), duration=timedelta(hours=1)))
    assert await ven._on_event(event("a", 2, status="cancelled")) == "optIn"
    await wait_for(lambda: site.fraction == 1.0, 20, "a cancelled: the site back to 100 %")
    assert set(ven._timers) == {"b"} and not ven._active
    # Two overlapping events in force: the lower level applies, and the other one's end does not lift it.
    await ven._on_event(event("c", 3, dtstart=now, duration=timedelta(hours=1)))
    await ven._on_event(event("d", 1, dtstart=now, duration=timedelta(hours=1)))
    await wait_for(lambda: ven._active == {"c": 0.0, "d": 0.75}, 20, "both in force")
    await wait_for(lambda: site.fraction == 0.0, 20, "the lowest level")
    await ven._on_event(event("d", 1, status="completed"))
    await asyncio.sleep(0)
    assert site.fraction == 0.0
    for i in range(3 * MAX_EVENTS):  # a flood of far-future events (year 9999 and beyond: capped)
        await ven._on_event(event(f"f{i}", 1, dtstart=datetime(9999, 1, 1, tzinfo=UTC), duration=timedelta(days=9e5)))
    assert len(ven._timers) == MAX_EVENTS
    for event_id in list(ven._timers):
        ven._forget(event_id)
