"""``mos``: run the agent, the local pool, or both (demo).

Each command lives in its own module under ``openmos.cli``, imported only when that command is chosen, so
``mos --help`` and every command pay only for what they use. A command module has
``configure(parser, command)`` (adds the command's arguments) and ``run(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, Protocol, cast

from openmos import __version__

EPILOG = """\
examples:
  mos demo                                   local pool + CPU agent, live status
  mos pool --port 3333                       run only the local pool (any Stratum V1 miner can connect)
  mos pool keygen --authority-key pool.key  a Stratum V2 authority key pair (prints the public key)
  mos pool --sv2-port 3336 --authority-key pool.key   also serve encrypted Stratum V2
  mos run --pool stratum+tcp://127.0.0.1:3333 --user me.rig1
  mos run --config /etc/openmos/agent.toml   pools and hardware from a config file
  mos run --hardware sim:s21 --pool stratum+tcp://127.0.0.1:3333   a simulated S21 (modelled figures)
  mos sim report s21                         simulator calibration vs nameplate, PNG of J/TH vs power
  mos tune s21 --profile eco                 autotune a simulated S21 to 70 % power (simulated time)
  mos scan --root / --baseline base.json --pubkey pub.pem   integrity and malware scan
  mos release sign bundle.tar.gz --version 0.2.0 --repo r --keys k   publish a signed update
  mos energy report --miners 200             a simulated site month: profit vs always-on vs foresight, PNG
  mos energy run --config site.toml          the energy service: prices, meter, cap, OpenADR -> fleet devices
  mos fleet demo                             1,000 simulated miners + the fleet dashboard on :8090
  mos fleet scan 10.0.0.0/24                 find miners answering the cgminer API (progress bar)
  mos config init agent.toml --pool stratum+tcp://pool.example:3333 --user me.rig1
"""

# command -> (module under openmos.cli, one-line help), in the order ``mos --help`` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("agent", "run the device agent against your pools"),
    "pool": ("pool", "run the built-in local pool (Stratum V1, and V2 with --sv2-port)"),
    "demo": ("agent", "local pool + CPU agent in one process, with live status"),
    "sim": ("sim", "simulated miners: models and calibration report"),
    "tune": ("tune", "autotune a simulated miner (fast, simulated time)"),
    "scan": ("security", "scan a filesystem for malware indicators and integrity changes"),
    "keygen": ("security", "create an ed25519 key pair for baselines and desired pool state"),
    "release": ("security", "publish signed update bundles (TUF repository)"),
    "update": ("security", "verify and install a signed update into the inactive A/B slot"),
    "energy": ("energy", "hashprice, break-even prices and a simulated site report"),
    "fleet": ("fleet", "fleet control plane: CA and enrollment, scan, simulated site demo"),
    "mqtt": ("mqtt", "publish third-party miners (via pyasic) to MQTT / Home Assistant"),
    "proxy": ("sv2", "farm proxy: Stratum V1 miners -> one encrypted Stratum V2 channel"),
    "jd": ("jd", "Job Declarator Client: mine templates built from your own node (Stratum V2 job declaration)"),
    "hw": ("hardware", "find BM13xx boards attached by USB"),
    "emulate": ("hardware", "emulate BM13xx hardware on pty serial ports (for testing without a board)"),
    "config": ("agent", "create or check an agent config file"),
}


class CommandModule(Protocol):
    def configure(self, parser: argparse.ArgumentParser, command: str) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def command_module(command: str) -> CommandModule:
    return cast(CommandModule, importlib.import_module(f"openmos.cli.{COMMANDS[command][0]}"))


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose arguments are added (importing the command's module) only when the command is chosen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configured: set[str] = set()

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        name = values[0] if isinstance(values, list) and values else None
        if name in COMMANDS and name not in self.configured:
            self.configured.add(name)
            command_module(name).configure(self._name_parser_map[name], name)
        super().__call__(parser, namespace, values, option_string)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mos", description="OpenMOS: open mining operating system for SHA-256 miners (no dev fee).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"openmos {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", action=_Commands)
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text)
    return parser


def _error_exit_code(exc: Exception) -> int | None:
    """The exit code for an error the user can act on (its message is printed), None for a bug."""
    from openmos.miner.config import ConfigError
    from openmos.security.signing import SignatureError
    from openmos.security.update import UpdateRejected

    if isinstance(exc, ConfigError):
        print(f"mos: configuration error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, ValueError):
        print(f"mos: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError | UpdateRejected | SignatureError):
        print(f"mos: {exc}", file=sys.stderr)
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        args = _build_parser().parse_args(argv)  # imports the command's module: seconds on a busy machine
    except KeyboardInterrupt:
        return 130
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
                        force=True)  # a library (pyasic) configures logging on import; ours must win
    try:
        return command_module(args.command).run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code = _error_exit_code(exc)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    sys.exit(main())
