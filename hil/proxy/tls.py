"""Ending the device's TLS at the proxy with the broker's own certificate.

A device trusts its broker's CA and, for mutual TLS, holds a certificate that CA signed. So the
proxy presents the broker's certificate (the device cannot tell it from the broker) and asks
for the device's certificate as the broker does, verified against the same CA; what the device
sent (server name, certificate subject) is then on record.
"""

from __future__ import annotations

import ssl
from typing import Any

from hil.proxy.proxy import ProxyError


def terminating_context(broker_options: Any) -> ssl.SSLContext:
    """The proxy's TLS towards the device, from a broker driver's `certfile`, `keyfile`,
    `cafile` and `require_certificate` (as a spawned mosquitto has them)."""
    cert = getattr(broker_options, "certfile", None)
    key = getattr(broker_options, "keyfile", None)
    ca = getattr(broker_options, "cafile", None)
    if not (cert and key):
        raise ProxyError(
            "the device speaks TLS and the proxy can end it only with the broker's own "
            "certificate, but this [broker] has no certfile and keyfile; use a broker the "
            'harness spawns (driver = "mosquitto") or remove proxy = true'
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(ca)
        # A certificate the device offers is checked and recorded even when none is required.
        required = getattr(broker_options, "require_certificate", False)
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    return context
