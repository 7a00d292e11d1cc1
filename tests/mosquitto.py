"""Debian's mosquitto on loopback for the MQTT tests (plain, with passwords, or with TLS)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from openmos.base.net import free_local_port

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)


class Broker:
    def __init__(self, workdir: Path, *, password: tuple[str, str] | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        assert MOSQUITTO is not None
        self.port = free_local_port()
        workdir.mkdir(parents=True, exist_ok=True)
        # As root, mosquitto drops to its own user, which cannot read the test's private files: stay as we are.
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 f"user {getpass.getuser()}"]
        if password is not None:
            pw = workdir / "passwd"
            pw.write_text("")
            subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b", str(pw), *password],
                           check=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        conf = workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.log = (workdir / "mosquitto.log").open("wb")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {(workdir / 'mosquitto.log').read_text()}") \
                        from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
