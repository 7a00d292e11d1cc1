"""Prometheus metrics, collected from the device view at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from openmos.api.view import DeviceView


class AgentCollector(Collector):
    def __init__(self, view: DeviceView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view
        source = "modelled" if v.modelled else "measured"
        yield GaugeMetricFamily("openmos_figures_modelled", "1: hashrate, power, temperatures and fans come from a "
                                "model (simulated hardware), not from counters and sensors", value=int(v.modelled))
        rate = GaugeMetricFamily("openmos_hashrate_hashes_per_second", "Hashrate over a trailing window",
                                 labels=["window", "source"])
        for name, seconds in (("5s", 5), ("1m", 60), ("5m", 300), ("15m", 900)):
            rate.add_metric([name, source], v.hashrate(seconds))
        yield rate
        if v.power_w is not None:
            yield GaugeMetricFamily("openmos_power_watts", "Input power at the wall", value=v.power_w)
            ths = v.hashrate(60) / 1e12
            if ths > 0:
                yield GaugeMetricFamily("openmos_efficiency_joules_per_terahash", "Power / hashrate (1m)",
                                        value=v.power_w / ths)
        temp = GaugeMetricFamily("openmos_temperature_celsius", "Board sensors", labels=["board", "sensor", "kind"])
        board_rate = GaugeMetricFamily("openmos_board_hashrate_terahashes", "Per-board hashrate (1m)",
                                       labels=["board"])
        hw_err = CounterMetricFamily("openmos_board_hardware_errors", "Chip error counters", labels=["board"])
        chips = GaugeMetricFamily("openmos_board_active_chips", "Chips hashing", labels=["board"])
        for b in v.boards():
            for i, t in enumerate(b.temperatures_c):
                temp.add_metric([str(b.index), str(i), "pcb"], t)
            for i, t in enumerate(b.chip_temperatures_c):
                temp.add_metric([str(b.index), str(i), "chip"], t)
            board_rate.add_metric([str(b.index)], b.hashrate_ths)
            hw_err.add_metric([str(b.index)], b.hardware_errors)
            chips.add_metric([str(b.index)], sum(1 for c in b.chips if c.enabled))
        yield from (temp, board_rate, hw_err, chips)
        fans = GaugeMetricFamily("openmos_fan_rpm", "Fan speed", labels=["fan"])
        for i, rpm, _ in v.fans():
            fans.add_metric([str(i)], rpm)
        yield fans
        shares = CounterMetricFamily("openmos_shares", "Shares answered by pools", labels=["pool", "result"])
        for p in v.pools():
            for result, n in (("accepted", p.accepted), ("rejected", p.rejected), ("stale", p.stale)):
                shares.add_metric([p.url, result], n)
        yield shares
        fates = CounterMetricFamily("openmos_share_fate", "Shares by what became of them besides the pool's answer "
                                    "(superseded block, throttled, unrecoverable session, re-sent duplicate, lost)",
                                    labels=["pool", "fate"])
        pool_state = GaugeMetricFamily("openmos_pool_state", "Per pool: difficulty values refused, mining "
                                       "difficulty, shares queued for their session, governor raising it (0/1), "
                                       "back-off length and seconds left before the pool is tried again, liveness "
                                       "probes sent and answered, stall suspicions",
                                       labels=["pool", "what"])
        for p in v.pools():
            for fate, n in (("superseded", p.superseded), ("throttled", p.throttled), ("lost", p.lost),
                            ("unrecoverable", p.unrecoverable), ("resent_duplicate", p.resent_duplicates)):
                fates.add_metric([p.url, fate], n)
            for what, value in (("difficulty_refused", p.difficulty_refused),
                                ("difficulty_governed", p.difficulty_governed), ("difficulty_slow", p.difficulty_slow),
                                ("mining_difficulty", p.mining_difficulty),
                                ("governor_active", float(p.governor_active)),
                                ("quality_failures", p.quality_failures), ("backoff_seconds", p.backoff_s),
                                ("bad_for_seconds", p.bad_for_s), ("resumed_sessions", p.resumed_sessions),
                                ("queued_shares", p.queued), ("liveness_probes", p.liveness_probes),
                                ("probe_answers", p.probe_answers), ("stall_suspicions", p.stall_suspicions)):
                pool_state.add_metric([p.url, what], value)
        yield from (fates, pool_state)
        stats = v.agent.stats
        yield CounterMetricFamily("openmos_agent_hardware_errors", "Nonces that failed re-validation",
                                  value=stats.hardware_errors)
        yield CounterMetricFamily("openmos_agent_valid_nonces", "Nonces that passed re-validation",
                                  value=stats.valid_nonces)
        tuner = v.agent.tuner
        if tuner is not None:
            state = GaugeMetricFamily("openmos_tuner_state", "1 for the current tuner state", labels=["state"])
            state.add_metric([tuner.status.state.value], 1)
            yield state


def registry_for(view: DeviceView) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(view))
    return registry
