"""TLS on either side of the proxy: towards a mosquitto TLS listener, and ending at the proxy,
where the server name the client asked for (SNI) and its certificate's subject are recorded.

The client is mosquitto_pub, whose libmosquitto sends SNI for a host name; certificates come
from the harness's session PKI (the helpers mosquitto's spawned TLS listener uses).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

import pytest

from hil.broker.tls import Authority, Issued
from hil.mqtt import tls_context
from hil.proxy import MqttProxy
from hil.proxy.impostor import Impostor
from tests.proxy.conftest import Client, Mosquitto, mosquitto_pub, needs_mosquitto, start_mosquitto
from tests.waiting import until

pytestmark = needs_mosquitto


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    yield from start_mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), tls=True)


@pytest.fixture(scope="module")
def device_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Issued, Issued]:
    """The proxy's own CA, its server pair (for localhost) and a device's client pair."""
    folder = tmp_path_factory.mktemp("device-pki")
    authority = Authority.create(folder, "device CA")
    server = authority.issue(folder, "proxy", hosts=("localhost", "127.0.0.1"))
    device = authority.issue(folder, "ESP32_SIM7600 device 42", client=True)
    return authority, server, device


def terminating(authority: Authority, server: Issued) -> ssl.SSLContext:
    """The proxy's side: its certificate, and a device certificate required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    context.load_verify_locations(authority.cert)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextlib.contextmanager
def running(proxy: MqttProxy) -> Iterator[MqttProxy]:
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_upstream_tls_reaches_a_tls_broker_for_a_plain_client(tls_broker: Mosquitto) -> None:
    endpoint = tls_broker.endpoint
    tls_broker.mark()
    with running(MqttProxy((endpoint.host, endpoint.port), tls_context(endpoint))) as proxy:
        done = mosquitto_pub(proxy.endpoint, "-i", "plain-device", "-t", "t", "-m", "m")
        assert done.returncode == 0, done.stderr
    assert tls_broker.lines(r"New client connected from \S+ as plain-device ")


def test_an_untrusted_broker_certificate_closes_the_device_connection(
    tls_broker: Mosquitto, device_pki: tuple[Authority, Issued, Issued]
) -> None:
    endpoint = tls_broker.endpoint
    wrong = ssl.create_default_context(cafile=str(device_pki[0].cert))  # not the broker's CA
    with running(MqttProxy((endpoint.host, endpoint.port), wrong)) as proxy:
        done = mosquitto_pub(proxy.endpoint, "-i", "refused", "-t", "t", "-m", "m")
        assert done.returncode != 0
        until(lambda: len(proxy.events) >= 3, 5, "the proxy giving up on the broker")
        error = next(e for e in proxy.events if e["event"] == "error")
        assert error["side"] == "broker" and "CERTIFICATE_VERIFY_FAILED" in error["problem"]


def test_tls_ends_at_the_proxy_with_the_sni_and_client_certificate_recorded(
    mosquitto: Mosquitto, tls_broker: Mosquitto, device_pki: tuple[Authority, Issued, Issued]
) -> None:
    authority, server, device = device_pki
    endpoint = tls_broker.endpoint
    tls_broker.mark()
    with running(
        MqttProxy(
            (endpoint.host, endpoint.port),
            upstream_tls=tls_context(endpoint),
            device_tls=terminating(authority, server),
        )
    ) as proxy:
        port = proxy.endpoint[1]
        done = mosquitto_pub(
            ("localhost", port),
            *("--cafile", str(authority.cert), "--cert", str(device.cert)),
            *("--key", str(device.key), "-i", "tls-device", "-t", "t", "-m", "m"),
        )
        assert done.returncode == 0, done.stderr
        [connect] = proxy.connects
        assert connect.sni == "localhost"
        assert connect.client_cert == "CN=ESP32_SIM7600 device 42"
        assert proxy.events[0]["sni"] == "localhost"
        anonymous = mosquitto_pub(
            ("localhost", port), "--cafile", str(authority.cert), "-t", "t", "-m", "m"
        )
        assert anonymous.returncode != 0
        assert len(proxy.connects) == 1  # no certificate, no handshake, no CONNECT
    assert tls_broker.lines(r"New client connected from \S+ as tls-device ")


def test_a_client_that_sends_no_server_name_is_recorded_without_one(
    mosquitto: Mosquitto, device_pki: tuple[Authority, Issued, Issued], clients: list[Client]
) -> None:
    authority, server, _ = device_pki
    context = terminating(authority, server)
    context.verify_mode = ssl.CERT_OPTIONAL
    upstream = (mosquitto.endpoint.host, mosquitto.endpoint.port)
    with running(MqttProxy(upstream, device_tls=context)) as proxy:
        # Python's ssl (under paho) sends no server name for an address, as RFC 6066 says
        trust = ssl.create_default_context(cafile=str(authority.cert))
        client = Client(("127.0.0.1", proxy.endpoint[1]), "by-address", tls=trust)
        clients.append(client)
        assert not client.connect().is_failure
        [connect] = proxy.connects
        assert (connect.sni, connect.client_cert) == (None, None)


def test_an_impostor_shows_a_certificate_the_client_refuses_until_it_steps_aside(
    mosquitto: Mosquitto, device_pki: tuple[Authority, Issued, Issued], tmp_path
) -> None:
    authority, server, _ = device_pki
    context = terminating(authority, server)
    context.verify_mode = ssl.CERT_NONE
    other = Authority.create(tmp_path, "another CA")
    stranger = other.issue(tmp_path, "impostor", hosts=("localhost", "127.0.0.1"))
    upstream = (mosquitto.endpoint.host, mosquitto.endpoint.port)
    with running(MqttProxy(upstream, device_tls=context)) as proxy:
        port = proxy.endpoint[1]
        publish = ("--cafile", str(authority.cert), "-i", "wary", "-t", "t", "-m", "m")
        with Impostor(proxy, stranger.cert, stranger.key) as impostor:
            refused = mosquitto_pub(("localhost", port), *publish)
            assert refused.returncode != 0
            assert impostor.hellos == 1
        assert proxy.connects == []  # no handshake, no CONNECT
        done = mosquitto_pub(("localhost", port), *publish)
        assert done.returncode == 0, done.stderr
        [connect] = proxy.connects
        assert (connect.client_id, connect.sni) == ("wary", "localhost")
