"""``--hardware`` specs for BM13xx boards.

- ``bitaxe:CONTROL_PORT,DATA_PORT[?model=gamma|supra|ultra&...]``
- ``bm13xx:PORT?chip=BM1366&chips=4[&...]`` or ``bm13xx:BOARD.toml`` (a board description file)

Common options: ``freq`` (MHz), ``voltage`` (V), ``ticket`` (chip ticket difficulty), ``job_interval`` (s),
``baud``, ``diff1_shift`` (emulator only; ``mos emulate`` prints the spec to use), and for the chips' counter
reads ``read_timeout`` (s, default 0.5), ``read_retries`` (default 2, each wait doubled; also the Bitaxe control
port's requests, whose first wait is 1 s) and ``read_misses`` (unanswered reads in a row before a chip counts as
not responding, and failed sensor polls in a row before the board's sensors are reported failing; default 3).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qsl

from openmos.hw.bm13xx import chip_type
from openmos.hw.bm13xx.backend import Bm13xxHardware, Bm13xxSettings
from openmos.hw.board.bitaxe import BITAXE_CHIPS, BitaxeBoard
from openmos.hw.board.serial_chain import BoardDescription, SerialChainBoard

BM13XX_HELP = ("bitaxe:CONTROL_PORT,DATA_PORT[?model=gamma|supra|ultra], "
               "bm13xx:PORT?chip=BM1366&chips=4 or bm13xx:BOARD.toml")
_FLOATS = {"freq": "frequency_mhz", "voltage": "voltage", "ticket": "ticket_difficulty",
           "job_interval": "job_interval_s", "poll": "poll_s", "ramp_step": "ramp_step_s",
           "read_timeout": "read_timeout_s"}
_INTS = {"chips": "chips", "baud": "baud", "diff1_shift": "diff1_shift", "read_retries": "read_retries",
         "read_misses": "read_miss_limit"}


def _options(query: str, allowed: set[str]) -> dict[str, str]:
    opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    unknown = sorted(set(opts) - allowed - set(_FLOATS) - set(_INTS))
    if unknown:
        known = ", ".join(sorted(allowed | set(_FLOATS) | set(_INTS)))
        raise ValueError(f"unknown hardware option(s) {unknown}: use {known}")
    return opts


def _settings(opts: dict[str, str], chip: str, chips: int | None = None) -> Bm13xxSettings:
    values: dict[str, object] = {"chip": chip_type(chip), "chips": chips}
    for key, attr in _FLOATS.items():
        if key in opts:
            value = float(opts[key])
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"hardware option {key} must be a positive number, got {opts[key]!r}")
            values[attr] = value
    for key, attr in _INTS.items():
        if key in opts:
            if not opts[key].isdigit():
                raise ValueError(f"hardware option {key} must be a non-negative integer, got {opts[key]!r}")
            values[attr] = int(opts[key])
    if not 0 <= int(str(values.get("diff1_shift", 0))) <= 32:
        raise ValueError("diff1_shift must be within 0..32")
    if float(str(values.get("read_timeout_s", 0.5))) > 10:
        raise ValueError("read_timeout must be at most 10 s")
    if not 0 <= int(str(values.get("read_retries", 0))) <= 5:
        raise ValueError("read_retries must be within 0..5 (each retry doubles the wait)")
    if not 1 <= int(str(values.get("read_miss_limit", 1))) <= 100:
        raise ValueError("read_misses must be within 1..100")
    return Bm13xxSettings(**values)  # type: ignore[arg-type]


def create_bitaxe(arg: str) -> Bm13xxHardware:
    ports, _, query = arg.partition("?")
    control, sep, data = ports.partition(",")
    if not sep or not control or not data:
        raise ValueError(f"bitaxe needs two ports: bitaxe:CONTROL_PORT,DATA_PORT (got {arg!r})")
    opts = _options(query, {"model", "chip"})
    model = opts.get("model", "gamma").lower()
    if model not in BITAXE_CHIPS:
        raise ValueError(f"unknown Bitaxe model {model!r}: one of {', '.join(BITAXE_CHIPS)}")
    chip = opts.get("chip", BITAXE_CHIPS[model])
    settings = _settings(opts, chip, 1)
    board = BitaxeBoard(control, data, settings.chip, voltage=settings.voltage, name=f"Bitaxe {model.title()}",
                        read_retries=settings.read_retries)
    return Bm13xxHardware(board, settings)


def create_serial_chain(arg: str) -> Bm13xxHardware:
    target, _, query = arg.partition("?")
    opts = _options(query, {"chip"})
    if target.endswith(".toml"):
        d = BoardDescription.load(target)
        settings = _settings(opts, opts.get("chip", d.chip), d.chips)
        return Bm13xxHardware(SerialChainBoard(d.port, settings.chip, description=d), settings)
    if not target:
        raise ValueError(f"bm13xx needs a serial port: {BM13XX_HELP}")
    if "chip" not in opts:
        raise ValueError("bm13xx needs the chip type: bm13xx:PORT?chip=BM1366&chips=4")
    chips = int(opts["chips"]) if opts.get("chips", "").isdigit() else None
    settings = _settings(opts, opts["chip"], chips)
    return Bm13xxHardware(SerialChainBoard(target, settings.chip), settings)
