"""Mosquitto spawned for the session on a free loopback port, its log kept as an artifact.

Mosquitto logs every connection with its protocol level (`p1` MQTT 3.1, `p2` 3.1.1, `p5` 5.0),
which is how the suites check that the device negotiated 3.1.1.
"""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.broker import BrokerDriver, BrokerEndpoint, BrokerError, free_port
from hil.broker.auth import password_from_env

_CONNECTED = re.compile(
    r"New client connected from (?P<peer>\S+) as (?P<client>\S+) "
    r"\(p(?P<level>\d+), c(?P<clean>\d), k(?P<keepalive>\d+)(?:, u'(?P<user>[^']*)')?\)"
)
# Mosquitto's log numbers protocols p1, p2, p5; the MQTT protocol level on the wire is 3, 4, 5.
PROTOCOLS = {1: (3, "3.1"), 2: (4, "3.1.1"), 5: (5, "5.0")}


@dataclass(frozen=True)
class MosquittoOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port chosen at start
    username: str | None = None
    password_env: str | None = None
    executable: str = "mosquitto"
    start_timeout_s: float = 10.0


class MosquittoBroker(BrokerDriver):
    """A private mosquitto for one session: config, password file and log live in `workdir`."""

    Options = MosquittoOptions
    reports_connections = True

    def __init__(self, options: MosquittoOptions, workdir: Path) -> None:
        super().__init__(options, workdir)
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    def _config(self, port: int, password: str | None) -> str:
        lines = [
            f"listener {port} {self.options.host}",
            "persistence false",
            # As root, mosquitto would switch to user "mosquitto", who cannot write our workdir.
            f"user {getpass.getuser()}",
            "log_type all",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"log_dest file {self.log_path}",
        ]
        if self.options.username:
            pwfile = self.workdir / "mosquitto.passwd"
            pwfile.touch(mode=0o600)
            subprocess.run(
                ["mosquitto_passwd", "-b", str(pwfile), self.options.username, password or ""],
                check=True,
                capture_output=True,
            )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n"

    def start(self) -> BrokerEndpoint:
        exe = shutil.which(self.options.executable) or shutil.which(
            self.options.executable, path="/usr/sbin:/usr/local/sbin"
        )
        if not exe:
            raise BrokerError(
                f"{self.options.executable} not found on PATH; install it (apt-get install "
                "mosquitto) or use driver = \"embedded\" in the rig's [broker]"
            )
        password = password_from_env(self.options.password_env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = self.options.port or free_port(self.options.host)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self._config(port, password))
        self._process = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.options.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                self._process = None
                raise BrokerError(f"mosquitto exited at start: {err.strip() or self.log_tail()}")
            try:
                with socket.create_connection((self.options.host, port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.02)
        else:
            self.stop()
            raise BrokerError(f"mosquitto did not listen on port {port} within "
                              f"{self.options.start_timeout_s} s")
        return BrokerEndpoint(self.options.host, port, None, self.options.username, password)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def log_tail(self, lines: int = 5) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def connections(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        found = []
        for m in _CONNECTED.finditer(self.log_path.read_text(errors="replace")):
            level, name = PROTOCOLS.get(int(m["level"]), (0, f"p{m['level']}"))
            found.append(
                {
                    "client_id": m["client"],
                    "protocol_level": level,
                    "protocol": name,
                    "clean_session": m["clean"] == "1",
                    "keepalive": int(m["keepalive"]),
                    "username": m["user"],
                }
            )
        return found
