"""The ``mos`` command line: help, config init/check, clear errors, a short demo."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from openmos.cli.main import COMMANDS, main
from openmos.miner.config import ConfigError


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("run", "pool", "demo", "config", "examples"):
        assert word in out


def test_help_imports_no_command_module() -> None:
    """``mos --help`` (and parsing) must not pay for the commands' imports: each is imported when it runs."""
    code = ("import sys\n"
            "from openmos.cli.main import main\n"
            "try:\n"
            "    main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = ('fastapi', 'zenoh', 'openleadr', 'numpy', 'pydantic', 'openmos.cli.agent', 'openmos.pool')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "COMMAND" in proc.stdout and "examples" in proc.stdout
    assert proc.stdout.strip().endswith("[]"), proc.stdout.splitlines()[-1]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_complete_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mos {command}") and "options:" in out


def test_config_init_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    assert main(["config", "init", str(path), "--pool", "stratum+tcp://127.0.0.1:3333", "--user", "me.r1"]) == 0
    assert main(["config", "check", str(path)]) == 0
    assert '"user": "me.r1"' in capsys.readouterr().out


def test_bad_config_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[[groups]]\nname = 'x'\n")
    assert main(["config", "check", str(path)]) == 2
    assert "groups.0.pools" in capsys.readouterr().err
    assert main(["run", "--pool", "ftp://x:1", "--no-status", "--duration", "1"]) == 2
    assert main(["run", "--no-status"]) == 2


def test_demo_runs_and_reports(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "openmos.cli.main", "demo", "--no-status", "--duration", "6", "--hardware", "cpu:1",
         "--no-api", "--difficulty", "0.00002"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "demo finished:" in proc.stdout
    accepted = int(proc.stdout.split("demo finished:")[1].split()[0])
    assert accepted >= 1


def test_run_pool_behaviour_options_reach_the_config() -> None:
    from openmos.cli.agent import _agent_config, _with_stratum_args
    from openmos.cli.main import _build_parser

    args = _build_parser().parse_args(["run", "--pool", "stratum+tcp://127.0.0.1:3333", "--suggest-difficulty",
                                       "0.01", "--difficulty-suffix", "password", "--fallback-interval", "7",
                                       "--max-share-rate", "2"])
    stratum = _with_stratum_args(_agent_config(args), args).stratum
    assert (stratum.suggest_difficulty, stratum.difficulty_suffix, stratum.fallback_interval_s,
            stratum.max_share_rate) == (0.01, "password", 7.0, 2.0)
    with pytest.raises(ConfigError):  # hostile values on the command line are refused like in a config file
        bad = _build_parser().parse_args(["run", "--pool", "stratum+tcp://127.0.0.1:3333", "--suggest-difficulty",
                                          "nan"])
        _with_stratum_args(_agent_config(bad), bad)


def test_every_option_of_every_command_explains_itself() -> None:
    """`mos <command> --help` is the manual: an option or positional without a help text showed as a bare name
    (config init/check, energy report, fleet scan, release, keygen, mqtt... had 30 of them)."""
    import argparse

    from openmos.cli.main import COMMANDS, _build_parser, command_module

    parser = _build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare: list[str] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction) and not action.help:
                bare.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    for name in COMMANDS:
        sub = commands.choices[name]
        command_module(name).configure(sub, name)
        walk(sub, f"mos {name}")
    assert bare == []


def test_ctrl_c_while_the_command_loads_is_a_quiet_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the first seconds of `mos run` (its modules still importing, 3 s on a loaded machine) printed a
    KeyboardInterrupt traceback from parse_args."""
    import openmos.cli.main as cli_main

    def interrupted(command: str) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "command_module", interrupted)
    assert cli_main.main(["run", "--duration", "1"]) == 130


@pytest.mark.parametrize("argv", [
    ["pool", "--port", "99999"], ["pool", "--port", "-5"], ["pool", "--difficulty", "nan"],
    ["pool", "--difficulty", "0"],
    ["pool", "--network-difficulty", "inf"], ["pool", "--duration", "nan"], ["pool", "--share-interval", "-1"],
    ["run", "--sim-speed", "nan"], ["run", "--sim-speed", "1e9"], ["run", "--duration", "-1"],
    ["demo", "--difficulty", "nan"], ["demo", "--port", "70000"],
    ["proxy", "--difficulty", "nan"], ["proxy", "--port", "70000"], ["jd", "--difficulty", "inf"],
    ["jd", "--port", "-1"],
    ["energy", "hashprice", "--difficulty", "1e14", "--btc-price", "nan"],
    ["energy", "hashprice", "--btc-price", "1e5", "--difficulty", "-1"],
    ["energy", "report", "--miners", "0"], ["energy", "report", "--miners", "100000000"],
    ["energy", "report", "--days", "1e400"],
    ["emulate", "chain", "--crc-error-every", "-1"],
    ["emulate", "chain", "--dead-chip", "nan"],
    ["emulate", "bitaxe-gamma", "--vr-fault-after", "nan"],
    ["emulate", "bitaxe-gamma", "--vr-fault-after", "-1"],
    ["emulate", "chain", "--hashrate", "inf"],
    ["emulate", "chain", "--hashrate", "0"],
    ["emulate", "chain", "--chips", "0"],
])
def test_absurd_numbers_on_the_command_line_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Observed: mos pool --port 99999 and --network-difficulty inf ended in OverflowError tracebacks, --difficulty
    nan ran a pool at "share diff nan", --sim-speed 1e9 ignored --duration, energy report --miners 0 raised
    ZeroDivisionError and --miners 100000000 ran for ever, hashprice --btc-price nan printed a table of nan."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {argv[-2]}: " in err and "Traceback" not in err


@pytest.mark.parametrize("option", ["--api-port", "--rest-port"])
def test_run_with_a_busy_api_port_exits_before_mining(option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`mos run` started the hardware and connected to its pools (2 CPU workers, a pool session) and only then
    found its cgminer or REST port taken: the listeners are bound first, and the one-line error says which."""
    from openmos.miner.agent import MiningAgent

    started: list[object] = []

    async def no_start(self: MiningAgent) -> None:
        started.append(self)

    monkeypatch.setattr(MiningAgent, "start", no_start)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        other = "--rest-port" if option == "--api-port" else "--api-port"
        code = main(["run", "--pool", "stratum+tcp://127.0.0.1:1", "--hardware", "sim:s21", "--no-status",
                     "--duration", "30", "--state-dir", str(tmp_path), option, str(port), other, "0"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and not started, err
    assert len(err.splitlines()) == 1 and f"127.0.0.1:{port}" in err and option in err, err
    assert ("cgminer" if option == "--api-port" else "REST") in err and "stop" in err, err
