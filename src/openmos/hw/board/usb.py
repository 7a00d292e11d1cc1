"""Find known BM13xx USB boards by VID/PID under Linux sysfs, with their serial ports (control port first)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KNOWN_USB: dict[tuple[int, int], str] = {
    (0xC0DE, 0xCAFE): "bitaxe-raw firmware (Bitaxe; --hardware bitaxe:CONTROL,DATA)",
    (0x303A, 0x1001): "Espressif ESP32-S3 serial (a Bitaxe still running ESP-Miner: flash bitaxe-raw first)",
}


@dataclass(frozen=True)
class UsbBoard:
    vid: int
    pid: int
    description: str
    serial: str
    ports: tuple[str, ...]  # /dev paths, by interface number

    @property
    def hardware_spec(self) -> str | None:
        if (self.vid, self.pid) == (0xC0DE, 0xCAFE) and len(self.ports) >= 2:
            return f"bitaxe:{self.ports[0]},{self.ports[1]}"
        return None


def _hex(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def find_usb_boards(sysfs: Path = Path("/sys/bus/usb/devices")) -> list[UsbBoard]:
    boards: list[UsbBoard] = []
    if not sysfs.is_dir():
        return boards
    for dev in sorted(sysfs.iterdir()):
        vid, pid = _hex(dev / "idVendor"), _hex(dev / "idProduct")
        if vid is None or pid is None or (vid, pid) not in KNOWN_USB:
            continue
        ports = sorted((tty.parent.parent.name, f"/dev/{tty.name}")
                       for tty in dev.glob(f"{dev.name}:*/tty/*"))
        serial = (dev / "serial").read_text().strip() if (dev / "serial").is_file() else ""
        boards.append(UsbBoard(vid, pid, KNOWN_USB[(vid, pid)], serial, tuple(p for _, p in ports)))
    return boards
