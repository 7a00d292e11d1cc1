"""``mos energy``: hashprice and break-even maths, and a simulated site report with plots."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from openmos.cli.args import DIFFICULTY, DURATION, count, number
from openmos.energy.config import SiteConfig
from openmos.energy.demand import DemandResponseVen
from openmos.energy.economics import break_even_usd_per_kwh, hashprice_usd_per_ph_day
from openmos.energy.modbus import ModbusPowerMeter
from openmos.energy.optimizer import DispatchRules, FleetCurves
from openmos.energy.report import daily_rows, plot_report
from openmos.energy.service import EnergyService
from openmos.energy.simulate import hindsight_optimum, run_policy
from openmos.energy.site import Site
from openmos.energy.traces import synthetic_market
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import FleetController
from openmos.fleet.energy import FleetLink
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.pki import FleetDir
from openmos.hw.sim import get_model
from openmos.testbed.curves import tuned_curve_sync


def configure(energy: argparse.ArgumentParser, command: str) -> None:
    esub = energy.add_subparsers(dest="energy_command", required=True, metavar="ACTION")
    hp = esub.add_parser("hashprice", help="hashprice and break-even electricity price")
    hp.add_argument("--btc-price", type=number(0, 1e9, low_open=True), required=True, help="USD")
    hp.add_argument("--difficulty", type=DIFFICULTY, required=True, help="network difficulty, e.g. 1.3e14")
    hp.add_argument("--fees", type=number(0, 1000), default=0.02, help="BTC of fees per block (default %(default)s)")
    hp.add_argument("--jth", type=number(0, 1000, low_open=True), action="append", default=None,
                    help="efficiencies to price (J/TH)")
    svc = esub.add_parser(
        "run", help="run the energy service for a fleet site (price, meter, cap, OpenADR, optimiser)",
        description="Runs the price source, the Modbus site meter, the metered cap loop, the OpenADR VEN and the "
                    "optimiser, and commands the site's devices over the fleet bus (OpenMOS agents and pyasic-"
                    "managed miners): each device is planned from the efficiency curve its tuner measured. See "
                    "openmos/energy/config.py for an annotated site.toml.")
    svc.add_argument("--config", type=Path, required=True, help="site.toml")
    svc.add_argument("--duration", type=DURATION, default=0, help="stop after N seconds (0: until Ctrl-C)")
    rep = esub.add_parser("report", help="simulate a site over a synthetic price month; table and PNG")
    rep.add_argument("--miners", type=count(1, 10_000), default=200, help="simulated machines (default %(default)s)")
    rep.add_argument("--days", type=count(1, 366), default=30, help="days of synthetic prices (default %(default)s)")
    rep.add_argument("--model", default="s21", help="simulated model (`mos sim list`; default %(default)s)")
    rep.add_argument("--seed", type=int, default=0, help="random seed for machines and prices")
    rep.add_argument("--plot", type=Path, default=Path("energy-report.png"), help="PNG to write (default %(default)s)")


async def run_service(config: SiteConfig, base: Path, duration: float, console: Console) -> None:
    """``mos energy run``: connect to the fleet as a controller and run the energy service until stopped."""
    fleet_dir = FleetDir(base / config.fleet.dir)
    tls = fleet_dir.controller_identity() if config.fleet.tls else None
    bus = FleetBus(BusConfig(connect=list(config.fleet.connect), tls=tls, role="controller" if tls else None,
                             sites=(config.site,)))
    await bus.open()
    controller = FleetController(bus, fleet_dir.command_key.read_bytes(), fleet_dir.root / "energy-audit.jsonl",
                                 registry=EnrollmentRegistry(fleet_dir.enrollment))
    link = FleetLink(controller, config.site)
    link.start()
    meter = ModbusPowerMeter(config.meter.host, config.meter.port, config.meter.reg, config.meter.device_id) \
        if config.meter else None
    site = Site(link)
    ven = None
    if config.openadr is not None:
        if meter is None:
            raise ValueError("[openadr] reports the site's load: configure a [meter] too")
        ven = DemandResponseVen(site, meter, config.openadr.vtn_url, config.openadr.ven_name)
    service = EnergyService(site, config.price.source(base), config.hashprice_usd_per_ph_day, config.interval_s,
                            config.rules.rules(), config.cap_w, meter, config.cap_interval_s, ven,
                            assumed_j_per_th=config.assumed_j_per_th)
    try:
        found = await link.refresh()
        console.print(f"energy: site {config.site}: {found} device(s) answered; nameplate "
                      f"{site.nameplate_w / 1000:,.1f} kW; deciding every {config.interval_s:g} s"
                      + (f"; metered cap {config.cap_w / 1000:,.1f} kW" if config.cap_w else ""))
        if not found:
            console.print("no device answered: check [fleet] connect, that devices are enrolled "
                          "(`mos fleet approve`) and that they run with this site name", style="yellow")
        await service.start()
        began = asyncio.get_running_loop().time()
        while not duration or asyncio.get_running_loop().time() - began < duration:
            await asyncio.sleep(min(config.interval_s, duration or config.interval_s))
            await link.refresh()  # devices come and go; curves improve as tuners learn
    finally:
        await service.stop()
        if meter is not None:
            meter.close()
        await bus.close()


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.energy_command == "hashprice":
        hp = hashprice_usd_per_ph_day(args.btc_price, args.difficulty, args.fees)
        console.print(f"hashprice: ${hp:.2f} per PH/s per day")
        table = Table("J/TH", "break-even $/kWh")
        for jth in args.jth or [13.5, 17.5, 21.5, 29.5]:
            table.add_row(f"{jth:g}", f"{break_even_usd_per_kwh(hp, jth):.4f}")
        console.print(table)
        return 0
    if args.energy_command == "run":
        config = SiteConfig.load(args.config)
        asyncio.run(run_service(config, args.config.parent, args.duration, console))
        return 0
    model = get_model(args.model)
    console.print(f"tuning a simulated {model.name} to learn its efficiency curve (45 simulated minutes)...")
    powers, rates = tuned_curve_sync(args.model, args.seed)
    rng = np.random.default_rng(args.seed)
    scale = rng.lognormal(0.0, 0.02, (args.miners, 1))
    curves = FleetCurves(np.tile(powers, (args.miners, 1)), np.tile(rates, (args.miners, 1)) * scale)
    market = synthetic_market(days=args.days, seed=args.seed)
    rules = DispatchRules()
    ledger = run_policy(curves, market, rules)
    always = run_policy(curves, market, rules, always_on=True)
    best = hindsight_optimum(curves, market, rules)
    table = Table(title=f"{args.miners} simulated {model.name} over {args.days} days (modelled)")
    for col in ("day", "used MWh", "curtailed MWh", "revenue $", "cost $", "profit $"):
        table.add_column(col, justify="right")
    for r in daily_rows(ledger):
        table.add_row(f"{r['day']:.0f}", f"{r['energy_mwh']:.1f}", f"{r['curtailed_mwh']:.1f}", f"{r['revenue']:,.0f}",
                      f"{r['cost']:,.0f}", f"{r['profit']:,.0f}")
    console.print(table)
    console.print(f"profit, OpenMOS deciding on the last price: ${ledger.profit:,.0f} ({ledger.profit / best:.1%} "
                  "of perfect foresight)")
    console.print(f"profit, always-on: ${always.profit:,.0f}")
    console.print(f"profit, perfect foresight: ${best:,.0f}")
    console.print(f"plot written to {plot_report(ledger, always, market, args.plot)}")
    return 0
