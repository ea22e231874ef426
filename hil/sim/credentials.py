"""A virtual rig's TLS for one session: certificates made for it, and what the twin carries.

A virtual rig whose broker the harness spawns with `tls = true` and no files of its own gets a
CA, a broker pair and (with `require_certificate`) the harness's client pair and the device's,
made fresh per session; the broker is started on them and the twin's firmware is built with
the CA and the device's pair, as a lab flashes a device with the certificates its broker
trusts. A rig that names its own files keeps them, and the device presents the harness's pair.
Keys live in a private folder of the session (mode 0700, never the artifacts) and go with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from hil.broker import TlsFiles
from hil.broker.tls import BrokerPki
from hil.rig import DriverConfig


@dataclass(frozen=True)
class SessionTls:
    """The rig's broker as the session starts it, and the firmware's TLS files."""

    broker: DriverConfig
    device: TlsFiles | None = None  # None: the broker speaks plain MQTT
    pki: BrokerPki | None = None  # the session's own CA and pairs, when it made them


def session_tls(broker: DriverConfig, private: Path) -> SessionTls:
    """The broker pointed at certificates made in `private` when it needs them, and the files
    the twin's firmware carries to reach it."""
    options = broker.options
    if not getattr(options, "tls", False):
        return SessionTls(broker)
    own_ca = getattr(options, "cafile", None) or getattr(options, "ca", None)
    if own_ca or not hasattr(options, "cafile"):
        cert, key = getattr(options, "cert", None), getattr(options, "key", None)
        pair = (Path(cert), Path(key)) if cert and key else (None, None)
        return SessionTls(broker, TlsFiles(Path(own_ca) if own_ca else None, *pair))
    mutual = bool(getattr(options, "require_certificate", False))
    pki = BrokerPki.create(private, client=mutual, device=mutual)
    server = pki.server
    files = {"cafile": str(pki.ca), "certfile": str(server.cert), "keyfile": str(server.key)}
    if pki.client is not None:
        files |= {"cert": str(pki.client.cert), "key": str(pki.client.key)}
    device = TlsFiles(pki.ca, *((pki.device.cert, pki.device.key) if pki.device else (None, None)))
    started = dataclasses.replace(broker, options=dataclasses.replace(options, **files))
    return SessionTls(started, device, pki)
