"""A malformed packet from either side closes that connection with one warning naming the
problem; the proxy goes on serving its other connections."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.proxy import MqttProxy
from tests.proxy.conftest import Client, Mosquitto, needs_mosquitto
from tests.waiting import until

pytestmark = needs_mosquitto

CONNECT_311 = bytes.fromhex("101000044d5154540402003c0004") + b"raw1"  # MQTT 3.1.1, id "raw1"


def closed_by_peer(sock: socket.socket, timeout: float = 3.0) -> bool:
    """Whether the other end closes `sock` within `timeout` (anything it sent first is read)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        (b"\x00\x00", "packet type 0 is reserved"),
        (bytes.fromhex("c000"), "the first packet is PINGREQ, not CONNECT"),
        (CONNECT_311 + b"\x36\x03\x00\x01a", "QoS 3"),
        (CONNECT_311 + b"\x30\xff\xff\xff\xff\x01", "four bytes"),
        (CONNECT_311 + b"\x30\x04\x00\x09ab", "needs 9 bytes"),
        (CONNECT_311 + b"\x30\x10\x00", "closed within a packet"),
    ],
    ids=["reserved-type", "not-connect", "qos-3", "long-length", "short-topic", "cut-short"],
)
def test_a_malformed_packet_from_the_device_closes_only_its_connection(
    sent: bytes,
    problem: str,
    proxy: MqttProxy,
    broker: Mosquitto,
    clients: list[Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = Client(proxy.endpoint, "good")
    clients.append(good)
    assert not good.connect().is_failure
    with (
        caplog.at_level(logging.WARNING, "hil.proxy"),
        socket.create_connection(proxy.endpoint) as bad,
    ):
        bad.sendall(sent)
        if problem == "closed within a packet":
            bad.shutdown(socket.SHUT_WR)
        assert closed_by_peer(bad)
        until(
            lambda: [e for e in proxy.events if e["event"] == "close" and e["conn"] == 2],
            3,
            "the proxy closing the bad connection",
        )
    [warning] = [r for r in caplog.records if r.name == "hil.proxy"]
    assert problem in warning.getMessage() and "from the device" in warning.getMessage()
    [error] = [e for e in proxy.events if e["event"] == "error"]
    assert error["side"] == "device" and problem in error["problem"]
    good.publish("still/here", "yes", qos=1).wait_for_publish(2)
    assert good.paho.is_connected()


@pytest.fixture
def bad_broker() -> Iterator[tuple[str, int]]:
    """A broker that accepts the CONNECT and answers with a packet of reserved type 0."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(bytes.fromhex("20020000") + b"\x00\x00")
            conn.settimeout(3)
            while conn.recv(4096):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    thread.join(5)
    server.close()


def test_a_malformed_packet_from_the_broker_closes_the_connection(
    bad_broker: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    proxy = MqttProxy(bad_broker)
    proxy.start()
    try:
        with (
            caplog.at_level(logging.WARNING, "hil.proxy"),
            socket.create_connection(proxy.endpoint) as device,
        ):
            device.sendall(CONNECT_311)
            assert closed_by_peer(device)
        until(lambda: proxy.events[-1]["event"] == "close", 3, "the proxy closing")
    finally:
        proxy.stop()
    [warning] = [r for r in caplog.records if r.name == "hil.proxy"]
    assert "malformed packet from the broker: packet type 0 is reserved" in warning.getMessage()
    assert [f["type"] for f in proxy.frames] == ["CONNECT", "CONNACK"]


@settings(deadline=None, database=None, max_examples=25)
@given(garbage=st.binary(min_size=1, max_size=48))
def test_random_bytes_after_a_connect_never_stop_the_proxy(
    garbage: bytes, mosquitto: Mosquitto
) -> None:
    proxy = MqttProxy((mosquitto.endpoint.host, mosquitto.endpoint.port))
    proxy.start()
    try:
        with socket.create_connection(proxy.endpoint) as device:
            device.sendall(CONNECT_311 + garbage)
            device.shutdown(socket.SHUT_WR)
            assert closed_by_peer(device)
        until(lambda: any(e["event"] == "close" for e in proxy.events), 3, "a close")
        client = Client(proxy.endpoint, "after")
        try:
            assert not client.connect().is_failure
        finally:
            client.close()
    finally:
        proxy.stop()
