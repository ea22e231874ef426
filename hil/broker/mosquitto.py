"""Mosquitto spawned for the session on a free loopback port, its log kept as an artifact.

Mosquitto logs every connection with its protocol level (`p1` MQTT 3.1, `p2` 3.1.1, `p5` 5.0),
which is how the suites check that the device negotiated 3.1.1.

With `tls = true` it listens with TLS like a lab broker: on the rig's `cafile`/`certfile`/
`keyfile`, or on a CA and certificates made for the session. `require_certificate = true`
makes it ask clients for a certificate signed by that CA (mutual TLS, AWS IoT style).

Session keys and the password file live in a private temporary folder, not the artifacts, and
are deleted at stop. The password is hashed here (PBKDF2-SHA512, as `mosquitto_passwd` does):
given to `mosquitto_passwd -b` it would sit in /proc/<pid>/cmdline for every local user.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil import schema
from hil.broker import BrokerDriver, BrokerEndpoint, BrokerError, TlsFiles, free_port
from hil.broker.auth import check_username, mosquitto_password_line, password_from_env
from hil.broker.tls import BrokerPki
from hil.lifetime import die_with_parent

_CONNECTED = re.compile(
    r"New client connected from (?P<peer>\S+) as (?P<client>\S+) "
    r"\(p(?P<level>\d+), c(?P<clean>\d), k(?P<keepalive>\d+)(?:, u'(?P<user>[^']*)')?\)"
)
# Mosquitto's log numbers protocols p1, p2, p5; the MQTT protocol level on the wire is 3, 4, 5.
PROTOCOLS = {1: (3, "3.1"), 2: (4, "3.1.1"), 5: (5, "5.0")}
FILE = {"file": True}


@dataclass(frozen=True)
class MosquittoOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port chosen at start
    username: str | None = None
    password_env: str | None = None
    executable: str = "mosquitto"
    start_timeout_s: float = 10.0
    tls: bool = False
    # The broker's side; all three, or none for a CA and certificates made for the session.
    cafile: str | None = field(default=None, metadata=FILE)
    certfile: str | None = field(default=None, metadata=FILE)
    keyfile: str | None = field(default=None, metadata=FILE)
    require_certificate: bool = False
    # The harness's client pair, signed by `cafile`'s CA (needed with require_certificate).
    cert: str | None = field(default=None, metadata=FILE)
    key: str | None = field(default=None, metadata=FILE)

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.nonempty, self.host, "host", "host name or address to listen on")
            check(schema.port, self.port, "port", free=True)
            check(schema.nonempty, self.executable, "executable", "mosquitto program")
            check(schema.positive, self.start_timeout_s, "start_timeout_s")
        if self.username is not None:
            check_username(self.username)
        server = (self.cafile, self.certfile, self.keyfile)
        if any(server) and not all(server):
            raise ValueError("cafile, certfile and keyfile go together (or none: made per session)")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (mutual TLS needs both)")
        tls_only = ("cafile", "certfile", "keyfile", "cert", "key", "require_certificate")
        unused = [k for k in tls_only if getattr(self, k)]
        if not self.tls and unused:
            keys = ", ".join(unused)
            raise ValueError(
                f"certificate keys need tls = true, but tls = false next to {keys}; "
                f"set tls = true or remove {keys}"
            )
        if self.require_certificate and self.cafile and not self.cert:
            raise ValueError(
                "require_certificate with your own cafile needs cert and key: the harness's "
                "client certificate signed by that CA"
            )


class MosquittoBroker(BrokerDriver):
    """A private mosquitto for one session: config, password file and log live in `workdir`."""

    Options = MosquittoOptions
    reports_connections = True

    def __init__(self, options: MosquittoOptions, workdir: Path) -> None:
        super().__init__(options, workdir)
        self._process: subprocess.Popen[bytes] | None = None
        self._private_dir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path = workdir / "mosquitto.log"

    def _private(self) -> Path:
        """A folder only this user can read (mode 0700), for keys and the password file."""
        if self._private_dir is None:
            self._private_dir = tempfile.TemporaryDirectory(prefix="hil-broker-")
        return Path(self._private_dir.name)

    def _tls(self) -> tuple[list[str], TlsFiles | None]:
        """The listener's TLS lines and the files a client uses, made here when the rig has none."""
        o = self.options
        if not o.tls:
            return [], None
        if o.cafile and o.certfile and o.keyfile:
            ca, cert, key = Path(o.cafile), Path(o.certfile), Path(o.keyfile)
            client = (Path(o.cert), Path(o.key)) if o.cert and o.key else (None, None)
        else:
            pki = BrokerPki.create(self._private(), client=o.require_certificate)
            ca, cert, key = pki.ca, pki.server.cert, pki.server.key
            client = (pki.client.cert, pki.client.key) if pki.client else (None, None)
            if o.cert and o.key:
                client = (Path(o.cert), Path(o.key))
        lines = [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if o.require_certificate:
            lines.append("require_certificate true")
        return lines, TlsFiles(ca=ca, cert=client[0], key=client[1])

    def _config(self, port: int, password: str | None, tls_lines: list[str]) -> str:
        lines = [
            f"listener {port} {self.options.host}",
            *tls_lines,
            "persistence false",
            # As root, mosquitto would switch to user "mosquitto", who cannot write our workdir.
            f"user {getpass.getuser()}",
            "log_type all",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"log_dest file {self.log_path}",
        ]
        if self.options.username:
            pwfile = self._private() / "mosquitto.passwd"
            line = mosquitto_password_line(self.options.username, password or "")
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(line)
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
                'mosquitto) or use driver = "embedded" in the rig\'s [broker]'
            )
        password = password_from_env(self.options.password_env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = self.options.port or free_port(self.options.host)
        tls_lines, tls = self._tls()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self._config(port, password, tls_lines))
        # Its own session: a Ctrl-C at the terminal reaches the harness, which stops the broker
        # after its clients; and it dies with the harness even if that is SIGKILLed.
        self._process = subprocess.Popen(
            [exe, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + self.options.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                self._process = None
                self._remove_private()
                raise BrokerError(f"mosquitto exited at start: {err.strip() or self.log_tail()}")
            try:
                with socket.create_connection((self.options.host, port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.02)
        else:
            self.stop()
            raise BrokerError(
                f"mosquitto did not listen on port {port} within {self.options.start_timeout_s} s"
            )
        return BrokerEndpoint(
            self.options.host, port, tls, self.options.username, password, self.options.password_env
        )

    def stop(self) -> None:
        self._stop_process()
        self._remove_private()

    def _remove_private(self) -> None:
        if self._private_dir is not None:
            self._private_dir.cleanup()
            self._private_dir = None

    def _stop_process(self) -> None:
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
