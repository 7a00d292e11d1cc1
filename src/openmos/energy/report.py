"""Daily energy report (energy, curtailment, revenue, cost, profit) and its plots."""

from __future__ import annotations

from pathlib import Path

from openmos.energy.simulate import SiteLedger
from openmos.energy.traces import MarketTrace


def daily_rows(ledger: SiteLedger) -> list[dict[str, float]]:
    return [{"day": d + 1, "energy_mwh": ledger.energy_kwh[d] / 1000, "curtailed_mwh": ledger.curtailed_kwh[d] / 1000,
             "revenue": ledger.revenue[d], "cost": ledger.cost[d], "wear": ledger.wear[d],
             "profit": ledger.revenue[d] - ledger.cost[d] - ledger.wear[d]} for d in range(len(ledger.revenue))]


def plot_report(ledger: SiteLedger, baseline: SiteLedger, market: MarketTrace, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, base = daily_rows(ledger), daily_rows(baseline)
    days = np.arange(1, len(rows) + 1)
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), dpi=100, sharex=False)
    ax1.bar(days - 0.2, [r["profit"] for r in rows], 0.4, label="OpenMOS optimiser")
    ax1.bar(days + 0.2, [r["profit"] for r in base], 0.4, label="always on")
    ax1.set_ylabel("profit per day, $")
    ax1.legend()
    ax1.set_title("Simulated site (modelled): daily profit, energy and prices")
    ax2.bar(days, [r["energy_mwh"] for r in rows], label="used")
    ax2.bar(days, [r["curtailed_mwh"] for r in rows], bottom=[r["energy_mwh"] for r in rows], label="curtailed")
    ax2.set_ylabel("MWh per day")
    ax2.legend()
    hours = np.arange(market.steps) * market.step_s / 86400 + 1
    ax3.plot(hours, market.price_usd_per_kwh, lw=0.5)
    ax3.set_ylabel("$/kWh")
    ax3.set_xlabel("day")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
