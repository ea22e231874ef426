"""The proxy posing as the broker with another CA's certificate, checked by `openssl s_client`:
a client verifying against the broker's CA is refused, one trusting the other CA gets that
certificate, the client's own certificate is still required, and leaving restores the real
one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hil.broker import free_port
from hil.broker.tls import BrokerPki
from hil.proxy import MqttProxy, ProxyError
from hil.proxy.impostor import Impostor
from hil.proxy.tls import terminating_context
from tests.tls.conftest import needs_openssl_and_mosquitto

pytestmark = needs_openssl_and_mosquitto


@pytest.fixture
def proxy(pki: BrokerPki) -> Iterator[MqttProxy]:
    """A proxy ending TLS on `pki`'s broker pair, wanting a client certificate of its CA."""
    options = SimpleNamespace(  # a spawned mosquitto's keys, as terminating_context reads them
        cafile=str(pki.ca),
        certfile=str(pki.server.cert),
        keyfile=str(pki.server.key),
        require_certificate=True,
    )
    proxy = MqttProxy(("127.0.0.1", free_port()), device_tls=terminating_context(options))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def s_client(proxy: MqttProxy, ca: Path, pair: tuple[Path, Path] | None) -> str:
    """What `openssl s_client` says of one TLS 1.2 handshake with the proxy, naming localhost."""
    assert proxy.endpoint is not None
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.endpoint[1]}"]
    argv += ["-servername", "localhost", "-CAfile", str(ca), "-verify_return_error"]
    argv += ["-brief", "-tls1_2"]  # the module's newest; a missing client pair fails the handshake
    if pair is not None:
        argv += ["-cert", str(pair[0]), "-key", str(pair[1])]
    done = subprocess.run(argv, input="", capture_output=True, text=True, timeout=15)
    return done.stdout + done.stderr


def test_a_client_verifying_the_broker_refuses_the_impostor(
    proxy: MqttProxy, pki: BrokerPki, foreign: BrokerPki
) -> None:
    assert pki.device is not None
    device = (pki.device.cert, pki.device.key)
    assert "Verification: OK" in s_client(proxy, pki.ca, device)
    with Impostor(proxy, foreign.server.cert, foreign.server.key) as impostor:
        refused = s_client(proxy, pki.ca, device)
        trusting = s_client(proxy, foreign.ca, device)
        without_certificate = s_client(proxy, foreign.ca, None)
        hellos = impostor.hellos
    assert "certificate verify failed" in refused, refused
    assert "CONNECTION ESTABLISHED" not in refused, refused
    assert "Verification: OK" in trusting, trusting  # the other CA's certificate, shown
    assert "CONNECTION ESTABLISHED" not in without_certificate, without_certificate
    assert hellos == 3
    assert "Verification: OK" in s_client(proxy, pki.ca, device)  # the broker's own again


def test_an_impostor_needs_a_proxy_that_ends_tls(foreign: BrokerPki) -> None:
    plain = MqttProxy(("127.0.0.1", free_port()))
    with pytest.raises(ProxyError, match="needs the proxy to end the device's TLS"):
        Impostor(plain, foreign.server.cert, foreign.server.key)
