"""MQTT brokers a rig talks through: the interface and what a client needs to reach one.

A driver is one class in one file, registered in the `hil.broker` entry-point group, with an
`Options` dataclass for its keys in the rig's `[broker]` table. `start()` makes the broker
reachable (spawning it if the driver owns it) and `stop()` gives everything back.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class BrokerError(RuntimeError):
    """The broker cannot be started or reached; the message names it and the fix."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class BrokerEndpoint:
    """How a client reaches the broker. The password is kept out of repr and logs.

    `password_env` names where the password came from, so errors can point there.
    """

    host: str
    port: int
    tls: TlsFiles | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BrokerDriver(ABC):
    """A broker for one test session."""

    Options: ClassVar[type]

    def __init__(self, options: Any, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.log_path: Path | None = None

    @abstractmethod
    def start(self) -> BrokerEndpoint:
        """Make the broker reachable and say how to reach it."""

    def stop(self) -> None:
        """Give back whatever start() took."""

    def connections(self) -> list[dict[str, Any]]:
        """Client connections seen so far (client id, protocol level), where the broker tells."""
        return []
