"""A broker the lab runs (EMQX, AWS IoT, a lab mosquitto): the harness only connects to it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from hil.broker import BrokerDriver, BrokerEndpoint, BrokerError, TlsFiles
from hil.broker.auth import password_from_env

FILE = {"file": True}


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
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (mutual TLS needs both)")


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
