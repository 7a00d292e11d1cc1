"""``mos hw list`` (known USB boards by VID/PID) and ``mos emulate`` (the wire-level BM13xx emulator on ptys)."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console
from rich.table import Table

from openmos.cli.args import count, number
from openmos.cli.display import stop_event
from openmos.emulator.chip import MODELS as EMU_CHIPS
from openmos.emulator.devices import BOARDS, EmulatedBitaxe, EmulatedSerialChain
from openmos.hw.board.usb import find_usb_boards


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "hw":
        hw_sub = parser.add_subparsers(dest="hw_command", required=True, metavar="ACTION")
        hw_sub.add_parser("list", help="list known USB boards (by VID/PID) and the --hardware spec to use")
    else:
        _configure_emulate(parser)


def run(args: argparse.Namespace) -> int:
    return run_hw(args) if args.command == "hw" else run_emulate(args)


def _configure_emulate(emu: argparse.ArgumentParser) -> None:
    emu.description = ("Serves emulated hardware on pty pairs and prints the --hardware spec for `mos run`. The "
                       "emulated chips hash real SHA-256d at a reduced rate; their difficulty 1 is 2**-SHIFT so that "
                       "Python speed still finds nonces (pass the printed diff1_shift to the driver). Temperatures "
                       "and power are modelled.")
    emu.add_argument("device", choices=[*BOARDS, "chain"], help="a Bitaxe model, or a bare serial chain")
    emu.add_argument("--chip", default="bm1366", choices=list(EMU_CHIPS), help="chain only: chip type")
    emu.add_argument("--chips", type=count(1, 256), default=4,
                     help="chain only: chips on the chain (default: %(default)s)")
    emu.add_argument("--hashrate", type=number(0, 1e12, low_open=True), default=20_000.0,
                     help="emulated hashes per second per chip at stock frequency (default: %(default)s)")
    emu.add_argument("--diff1-shift", type=count(0, 32), default=20,
                     help="emulated difficulty scale (default: %(default)s)")
    emu.add_argument("--crc-error-every", type=count(0, 1_000_000), default=0, help="fault: corrupt every N-th reply")
    emu.add_argument("--dead-chip", type=count(0, 255), action="append", default=[],
                     help="fault: this chip never answers")
    emu.add_argument("--vr-fault-after", type=number(0, 86_400), default=None,
                     help="fault (Bitaxe): regulator over-current after this many seconds")
    emu.add_argument("--stuck-fan", action="store_true", help="fault (Bitaxe): the fan does not turn")


def run_hw(args: argparse.Namespace) -> int:
    console = Console()
    boards = find_usb_boards()
    if not boards:
        console.print("No known BM13xx USB board found (looked for VID:PID "
                      "c0de:cafe bitaxe-raw, 303a:1001 ESP32-S3). Check the cable, or try `mos emulate`.")
        return 1
    table = Table("VID:PID", "board", "serial", "ports", "--hardware")
    for b in boards:
        table.add_row(f"{b.vid:04x}:{b.pid:04x}", b.description, b.serial, " ".join(b.ports), b.hardware_spec or "")
    console.print(table)
    return 0


def run_emulate(args: argparse.Namespace) -> int:
    return asyncio.run(_emulate(args))


async def _emulate(args: argparse.Namespace) -> int:
    console = Console()
    stop = stop_event()
    opts = f"diff1_shift={args.diff1_shift}"
    device: EmulatedBitaxe | EmulatedSerialChain
    if args.device == "chain":
        device = EmulatedSerialChain(args.chip, args.chips, hashrate=args.hashrate, diff1_shift=args.diff1_shift)
        path = await device.start()
        spec = f"bm13xx:{path}?chip={args.chip.upper()}&chips={args.chips}&{opts}"
    else:
        device = EmulatedBitaxe(args.device, hashrate=args.hashrate, diff1_shift=args.diff1_shift)
        control, data = await device.start()
        device.emc.stuck_fan = args.stuck_fan
        spec = f"bitaxe:{control},{data}?model={args.device.split('-')[1]}&{opts}"
    chain = device.chain
    chain.faults.crc_error_every = args.crc_error_every
    for index in args.dead_chip:
        if 0 <= index < len(chain.chips):
            chain.chips[index].dead = True
    console.print(f"Emulating [bold]{args.device}[/bold] ({chain.model.name} x {len(chain.chips)}, "
                  f"{args.hashrate:g} H/s per chip, modelled thermals). Mine with:\n"
                  f"  mos run --hardware '{spec}' --pool stratum+tcp://127.0.0.1:3333\nCtrl-C to stop.")
    if args.vr_fault_after is not None and isinstance(device, EmulatedBitaxe):
        asyncio.get_running_loop().call_later(args.vr_fault_after, device.inject_vr_fault)
    await stop.wait()
    await device.stop()
    return 0
