"""A broker impostor: the proxy's device side presenting a certificate the device must refuse.

While an `Impostor` is active, every TLS handshake the device starts with a TLS-terminating
proxy is answered with another certificate (one of a CA the device was never given), swapped
in from the server-name callback as Python's `ssl` allows; the device's own certificate is
asked for and checked as before, so only the server's side differs. A device that verifies
its broker aborts the handshake and tries again; one that does not goes on to send its
CONNECT. `hellos` counts the handshakes begun, so a check can wait for the device's
next attempt instead of for a fixed time.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from hil.proxy.proxy import MqttProxy, ProxyError


class Impostor:
    """`with Impostor(proxy, cert, key):` the device is shown `cert` (PEM files)."""

    def __init__(self, proxy: MqttProxy, cert: Path, key: Path) -> None:
        if proxy.device_tls is None:
            raise ProxyError(
                "an impostor needs the proxy to end the device's TLS (device_tls), but this "
                "proxy forwards plain MQTT; use a virtual rig whose broker has tls = true"
            )
        self._device_tls = device_tls = proxy.device_tls
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        # The new context's store checks the client's certificate: the proxy's own CAs.
        self._context.verify_mode = device_tls.verify_mode
        for der in device_tls.get_ca_certs(binary_form=True):
            self._context.load_verify_locations(cadata=der)
        self._lock = threading.Lock()
        self._hellos = 0
        self._previous: Any = None

    @property
    def hellos(self) -> int:
        """The handshakes the device began since the impostor took over."""
        with self._lock:
            return self._hellos

    def __enter__(self) -> Impostor:
        self._previous = previous = self._device_tls.sni_callback

        def impersonate(connection: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
            result = previous(connection, name, ctx) if previous else None
            connection.context = self._context
            with self._lock:
                self._hellos += 1
            return result

        self._device_tls.sni_callback = impersonate
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._device_tls.sni_callback = self._previous
