"""Where malware makes itself survive a reboot on a Linux control board, and which lines of those files act.

Each :class:`PersistenceClass` names the paths (``*`` patterns relative to the scanned root) and how to
tell an active line from a comment or a stock no-op, so the scanner can say "3 active lines, 1 of them
fetches or runs something from a temporary directory" without ever printing the lines themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Commands and places that have no business in a boot script or a login profile of a miner.
SUSPICIOUS = re.compile(
    r"(curl|wget|tftp|\bnc\b|ncat|socat|base64|/dev/tcp/|\bbash -i\b|python[0-9.]* -c|perl -e|nohup|"
    r"/tmp/|/var/tmp/|/dev/shm/|stratum\+|xmrig|minerd|cpuminer|ld\.so\.preload|antminers|usr/bin/build|"
    r"bitmsfser|minerlink|chattr)", re.IGNORECASE)
INITTAB_ACTIONS = {"respawn", "once", "sysinit", "boot", "bootwait", "wait", "askfirst", "shutdown", "ctrlaltdel"}


def _plain_active(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#") and text not in ("exit 0", "true", ":")


# What a stock busybox / sysvinit inittab starts: consoles, the rc scripts, logging and shutdown steps.
INITTAB_STOCK = re.compile(
    r"^-?(/s?bin/|/usr/s?bin/)?(getty|agetty|mingetty|login|sh|ash|bash|syslogd|klogd|swapoff|umount|reboot|"
    r"poweroff|halt|mount|hostname|sulogin|openmos-agent)\b|^/etc/init\.d/rc[SK]?\b|^/etc/rc\.d/rc")


def _inittab_active(line: str) -> bool:
    """``id:runlevels:action:process`` lines that start something other than the stock console, rc scripts
    and logging (busybox and sysvinit syntax)."""
    fields = line.strip().split(":", 3)
    return len(fields) == 4 and not line.lstrip().startswith("#") and fields[2].strip() in INITTAB_ACTIONS \
        and bool(fields[3].strip()) and not INITTAB_STOCK.match(fields[3].strip())


def _unit_active(line: str) -> bool:
    return line.strip().startswith(("Exec", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload"))


@dataclass(frozen=True)
class PersistenceClass:
    name: str
    what: str
    patterns: tuple[str, ...]
    active: Callable[[str], bool] = _plain_active
    unknown: str = "medium"  # severity of active, unsuspicious lines when there is no baseline to compare with


CLASSES: tuple[PersistenceClass, ...] = (
    PersistenceClass("cron", "scheduled job", (
        "etc/crontab", "etc/anacrontab", "etc/cron.d/*", "etc/cron.hourly/*", "etc/cron.daily/*",
        "etc/cron.weekly/*", "etc/cron.monthly/*", "etc/cron.yearly/*", "etc/cron/crontabs/*",
        "var/spool/cron/*", "var/spool/cron/crontabs/*")),
    PersistenceClass("systemd", "unit started at boot", (
        "etc/systemd/system/*.service", "etc/systemd/system/*.timer", "etc/systemd/system/*.wants/*",
        "lib/systemd/system/*.wants/*", "usr/lib/systemd/system/*.wants/*", "etc/systemd/user/*.wants/*"),
        _unit_active),
    PersistenceClass("init", "boot script", (
        "etc/rc.local", "etc/init.d/*", "etc/rc.d/*", "etc/rc?.d/*", "etc/rcS.d/*")),
    PersistenceClass("inittab", "process (re)started by init", ("etc/inittab",), _inittab_active, "high"),
    PersistenceClass("shell-profile", "commands run at every login", (
        "etc/profile", "etc/profile.d/*", "etc/bash.bashrc", "etc/bashrc", "etc/environment",
        "root/.profile", "root/.bashrc", "root/.bash_profile", "root/.bash_login", "root/.bash_logout",
        "root/.ashrc", "root/.shrc", "home/*/.profile", "home/*/.bashrc", "home/*/.bash_profile",
        "home/*/.bash_login")),
    PersistenceClass("ssh-key", "remote login key", (
        "root/.ssh/authorized_keys", "root/.ssh/authorized_keys2", "home/*/.ssh/authorized_keys",
        "home/*/.ssh/authorized_keys2", "etc/dropbear/authorized_keys")),
)
