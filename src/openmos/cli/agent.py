"""``mos run`` (the device agent), ``mos demo`` (local pool + CPU agent) and ``mos config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from rich.console import Group

from openmos.api.service import DeviceApis, PortBusy
from openmos.cli.args import DURATION, number
from openmos.cli.display import agent_panel, pool_panel, serve
from openmos.cli.pool import add_pool_args, pool_settings
from openmos.hw.factory import HARDWARE_HELP, create_hardware
from openmos.miner.agent import MiningAgent
from openmos.miner.config import AgentConfig, ConfigError, PoolEndpoint, PoolGroupConfig
from openmos.mqtt.agent import agent_bridge
from openmos.pool.server import LocalPool

log = logging.getLogger("openmos")


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "run":
        _configure_run(parser)
    elif command == "demo":
        _configure_demo(parser)
    else:
        _configure_config(parser)


def run(args: argparse.Namespace) -> int:
    if args.command == "config":
        return _config_command(args)
    return asyncio.run(_run_agent(args) if args.command == "run" else _run_demo(args))


def _configure_run(run: argparse.ArgumentParser) -> None:
    run.description = ("Mine with the chosen hardware. Pools come from --config or --pool; several --pool options "
                       "form one failover group, first = primary.")
    run.add_argument("--config", type=Path, help="agent TOML config (see `mos config init`)")
    run.add_argument("--pool", action="append", default=[], metavar="URL",
                     help="stratum+tcp://host:port, stratum+ssl://host:port or "
                          "stratum2+tcp://host:port/AUTHORITY_PUBKEY (repeat for failover)")
    run.add_argument("--user", default="openmos.worker", help="worker name (default: %(default)s)")
    run.add_argument("--password", default="x", help="pool password (default: %(default)s; most pools ignore it)")
    run.add_argument("--hardware", default=None, help=f"{HARDWARE_HELP} (default: cpu, one worker per core)")
    perf = run.add_mutually_exclusive_group()
    perf.add_argument("--power-target", type=float, metavar="W", help="autotune to this wall power")
    perf.add_argument("--hashrate-target", type=float, metavar="THS", help="autotune to this valid hashrate")
    perf.add_argument("--profile", choices=["eco", "balanced", "performance"], help="autotune to a preset")
    run.add_argument("--sim-speed", type=number(0, 1000, low_open=True), default=1.0,
                     help="simulated hardware only: simulated seconds per real second (default: %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="simulated hardware only: which unit")
    stratum = run.add_argument_group("pool behaviour (override the config's [stratum] section)")
    stratum.add_argument("--suggest-difficulty", type=float, metavar="D",
                         help="start difficulty to ask pools for (mining.suggest_difficulty); default: one share "
                              "every ~5 s on this hardware; 0: do not ask")
    stratum.add_argument("--difficulty-suffix", choices=["none", "user", "password"],
                         help="also put it in the worker name (user+D) or password (d=D), for pools that read it "
                              "there")
    stratum.add_argument("--fallback-interval", type=float, metavar="S",
                         help="seconds between checks whether a better pool is back (default 15)")
    stratum.add_argument("--max-share-rate", type=float, metavar="N",
                         help="share-rate governor: at most ~N shares/s whatever the pool difficulty (default 5)")
    _add_api_args(run)
    run.add_argument("--no-status", action="store_true", help="plain logs instead of the live status panel")
    run.add_argument("--duration", type=DURATION, default=0, help="stop after N seconds (0: run until Ctrl-C)")


def _configure_demo(demo: argparse.ArgumentParser) -> None:
    demo.description = ("Starts the built-in pool on 127.0.0.1 and an agent mining real SHA-256d shares on your "
                        "CPU. Ctrl-C stops cleanly.")
    add_pool_args(demo, default_port=0, network_difficulty=0.02)
    demo.add_argument("--hardware", default="cpu", help=f"{HARDWARE_HELP} (default: %(default)s)")
    _add_api_args(demo)
    demo.add_argument("--no-status", action="store_true", help="plain logs instead of the live status panel")
    demo.add_argument("--duration", type=DURATION, default=0, help="stop after N seconds (0: until Ctrl-C)")


def _configure_config(cfg: argparse.ArgumentParser) -> None:
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    init = cfg_sub.add_parser("init", help="write a new config (atomically)",
                              description="Write an agent config with one failover group of the given pools and "
                                          "every other setting at its default (edit it afterwards; `mos config "
                                          "check` validates it). Run it with `mos run --config PATH`.")
    init.add_argument("path", type=Path, help="the TOML file to write (e.g. /etc/openmos/agent.toml)")
    init.add_argument("--pool", action="append", required=True, metavar="URL",
                      help="stratum+tcp://host:port, stratum+ssl://host:port or stratum2+tcp://host:port/KEY "
                           "(repeat for failover, first = primary)")
    init.add_argument("--user", required=True, help="worker name, usually wallet.worker or account.worker")
    init.add_argument("--password", default="x", help="pool password (default: %(default)s)")
    init.add_argument("--hardware", default="cpu", help=f"{HARDWARE_HELP} (default: %(default)s)")
    check = cfg_sub.add_parser("check", help="validate a config file and print it",
                               description="Validate an agent config and print it with every default filled in; "
                                           "a problem is reported as section.field: what is wrong (exit code 2).")
    check.add_argument("path", type=Path, help="the agent TOML config to check")


def _add_api_args(parser: argparse.ArgumentParser) -> None:
    api = parser.add_argument_group("device APIs (cgminer 4028, REST + web page, Prometheus /metrics)")
    api.add_argument("--api-port", type=int, default=None, help="cgminer API port (default 4028; 0 = any free)")
    api.add_argument("--rest-port", type=int, default=None, help="REST/web port (default 8080; 0 = any free)")
    api.add_argument("--api-host", default=None, help="listen address for both APIs (default 127.0.0.1)")
    api.add_argument("--api-allow", action="append", default=None, metavar="W:IP/PREFIX",
                     help="hosts allowed to run privileged cgminer commands (repeatable; no wildcards)")
    api.add_argument("--auth-file", default=None,
                     help="accounts file for the REST API (default: accounts.json in --state-dir)")
    api.add_argument("--state-dir", type=Path, default=None,
                     help="where the agent keeps accounts across restarts (default: $OPENMOS_STATE_DIR, "
                          "/var/lib/openmos as root, else ~/.local/state/openmos)")
    api.add_argument("--no-api", action="store_true", help="run without the device APIs")


def _with_api_args(config: AgentConfig, args: argparse.Namespace) -> AgentConfig:
    updates = {k: v for k, v in (("cgminer_port", args.api_port), ("rest_port", args.rest_port),
                                 ("cgminer_host", args.api_host), ("rest_host", args.api_host),
                                 ("cgminer_allow", args.api_allow), ("auth_file", args.auth_file)) if v is not None}
    if args.no_api:
        updates["enabled"] = False
    if not updates:
        return config
    doc = config.model_dump()
    doc["api"] = {**doc["api"], **updates}
    return AgentConfig.from_dict(doc, source="command line")


async def _start_apis(agent: MiningAgent, config_path: Path | None, *, any_port_if_busy: bool = False,
                      state: Path | None = None) -> DeviceApis | None:
    if not agent.config.api.enabled:
        return None
    apis = DeviceApis(agent, config_path=config_path, state=state)
    try:
        await apis.start()
    except PortBusy as exc:
        if any_port_if_busy:  # the demo must start anywhere: fall back to free ports and say so
            log.warning("API ports busy (%s); using free ports instead", exc)
            doc = agent.config.model_dump()
            doc["api"] = {**doc["api"], "cgminer_port": 0, "rest_port": 0}
            agent.config = AgentConfig.from_dict(doc)
            apis = DeviceApis(agent, config_path=config_path, state=state)
            await apis.start()
            return apis
        option = "--rest-port" if exc.api == "rest" else "--api-port"
        raise OSError(f"{exc}: stop the process listening there, choose another port with {option} (0 = any free) "
                      "or run with --no-api; nothing was started") from None
    return apis


def _agent_config(args: argparse.Namespace) -> AgentConfig:
    perf = {k: v for k, v in (("power_w", args.power_target), ("hashrate_ths", args.hashrate_target),
                              ("profile", args.profile)) if v is not None}
    if args.config:
        config = AgentConfig.load(args.config)
        if args.hardware:
            config = config.model_copy(update={"hardware": args.hardware})
        if perf:
            merged = {**config.performance.model_dump(), "power_w": None, "hashrate_ths": None, "profile": None,
                      **perf}
            config = AgentConfig.from_dict({**config.model_dump(), "performance": merged}, source=str(args.config))
        return config
    if not args.pool:
        raise ConfigError("no pool given: pass --pool URL (repeatable) or --config FILE")
    return AgentConfig.from_dict({
        "performance": perf,
        "hardware": args.hardware or "cpu",
        "groups": [{"name": "default", "pools": [{"url": u, "user": args.user, "password": args.password}
                                                 for u in args.pool]}],
    }, source="command line")


def _with_stratum_args(config: AgentConfig, args: argparse.Namespace) -> AgentConfig:
    updates = {k: v for k, v in (("suggest_difficulty", args.suggest_difficulty),
                                 ("difficulty_suffix", args.difficulty_suffix),
                                 ("fallback_interval_s", args.fallback_interval),
                                 ("max_share_rate", args.max_share_rate)) if v is not None}
    if not updates:
        return config
    doc = config.model_dump()
    doc["stratum"] = {**doc["stratum"], **updates}
    return AgentConfig.from_dict(doc, source="command line")


async def _run_agent(args: argparse.Namespace) -> int:
    config = _with_api_args(_with_stratum_args(_agent_config(args), args), args)
    agent = MiningAgent(config, create_hardware(config.hardware, seed=args.seed, sim_speed=args.sim_speed))
    # The listeners first: a busy port ends the run before any hashing, pool session or share.
    apis = await _start_apis(agent, args.config, state=args.state_dir)
    mqtt = agent_bridge(agent)  # MQTT / Home Assistant when [mqtt] host is set
    try:
        await agent.start()
    except BaseException:
        if apis is not None:
            await apis.stop()
        raise
    try:
        if mqtt is not None:
            await mqtt.start()
        await serve(args.duration, lambda: Group(agent_panel(agent)), not args.no_status)
    finally:
        if mqtt is not None:
            await mqtt.stop()
        if apis is not None:
            await apis.stop()
        await agent.stop()
    return 0


async def _run_demo(args: argparse.Namespace) -> int:
    pool = LocalPool(pool_settings(args))
    await pool.start()
    worker = "demo." + args.hardware.replace(":", "-")
    config = _with_api_args(AgentConfig.from_dict({
        "hardware": args.hardware,
        "groups": [{"name": "local", "pools": [{"url": pool.url, "user": worker}]}],
        "stratum": {"suggest_difficulty": 0},  # the demo pool's --difficulty is the operator's choice
    }), args)
    agent = MiningAgent(config, create_hardware(config.hardware))
    await agent.start()
    log.info("demo: mining real SHA-256d shares on the CPU against the local pool at %s. Ctrl-C stops.", pool.url)
    apis = None
    try:
        apis = await _start_apis(agent, None, any_port_if_busy=True, state=args.state_dir)
        await serve(args.duration, lambda: Group(agent_panel(agent), pool_panel(pool)), not args.no_status)
    finally:
        if apis is not None:
            await apis.stop()
        await agent.stop()
        await pool.stop()
    w = pool.workers.get(worker)
    if w is not None:
        print(f"demo finished: {w.accepted} shares accepted by the pool, {len(pool.blocks_found)} local blocks, "
              f"{agent.stats.hardware_errors} hardware errors")
    return 0


def _config_command(args: argparse.Namespace) -> int:
    if args.config_command == "init":
        config = AgentConfig(hardware=args.hardware, groups=[PoolGroupConfig(
            pools=[PoolEndpoint(url=u, user=args.user, password=args.password) for u in args.pool])])
        config.save(args.path)
        print(f"wrote {args.path}")
    else:
        print(AgentConfig.load(args.path).model_dump_json(indent=2))
    return 0
