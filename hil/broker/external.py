"""A broker the lab runs (EMQX, AWS IoT, a lab mosquitto): the harness only connects to it."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path

from hil import schema
from hil.broker import BrokerDriver, BrokerEndpoint, BrokerError, TlsFiles
from hil.broker.auth import password_from_env

FILE = {"file": True}


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine, judged from the name alone (no DNS at rig load)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ExternalOptions:
    host: str
    port: int = 8883
    tls: bool = True
    ca: str | None = field(default=None, metadata=FILE)
    cert: str | None = field(default=None, metadata=FILE)
    key: str | None = field(default=None, metadata=FILE)
    insecure: bool = False  # skip certificate verification; must be written in the rig
    username: str | None = None
    password_env: str | None = None
    # With tls = false, send the password unencrypted to a host off this machine anyway.
    plaintext_password: bool = False
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        """Refuse keys that would do nothing, and a password sent in clear off this machine."""
        with schema.Checks() as check:
            check(schema.nonempty, self.host, "host", "host name of the lab's broker")
            check(schema.port, self.port, "port")
            check(schema.positive, self.connect_timeout_s, "connect_timeout_s")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (mutual TLS needs both)")
        if self.tls:
            if self.insecure and self.ca:
                raise ValueError(
                    "ca is never checked with insecure = true; remove insecure to verify the "
                    "broker against ca, or remove ca"
                )
            if self.plaintext_password:
                raise ValueError("plaintext_password applies only with tls = false; remove it")
            return
        tls_only = [k for k in ("ca", "cert", "key", "insecure") if getattr(self, k)]
        if tls_only:
            keys = ", ".join(tls_only)
            raise ValueError(
                f"TLS keys need tls = true, but tls = false next to {keys}; "
                f"set tls = true or remove {keys}"
            )
        if self.password_env and not self.plaintext_password and not is_loopback(self.host):
            raise ValueError(
                f"tls = false would send the password from password_env to {self.host} "
                "unencrypted; set tls = true, or write plaintext_password = true to accept that"
            )


class ExternalBroker(BrokerDriver):
    """Checks the broker answers on its port at start; TLS is verified against `ca` by default."""

    Options = ExternalOptions

    def start(self) -> BrokerEndpoint:
        o = self.options
        password = password_from_env(o.password_env)
        try:
            with socket.create_connection((o.host, o.port), timeout=o.connect_timeout_s):
                pass
        except OSError as exc:
            raise BrokerError(
                f"broker {o.host}:{o.port} is unreachable ({exc}); check [broker] host/port "
                "and the runner's network"
            ) from None
        tls = None
        if o.tls:
            tls = TlsFiles(
                ca=Path(o.ca) if o.ca else None,
                cert=Path(o.cert) if o.cert else None,
                key=Path(o.key) if o.key else None,
                insecure=o.insecure,
            )
        return BrokerEndpoint(o.host, o.port, tls, o.username, password, o.password_env)
