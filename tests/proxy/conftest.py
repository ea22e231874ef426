"""A real mosquitto behind the proxy, real clients (paho, mosquitto_pub/_sub) in front of it.

What the proxy says it saw is checked against what mosquitto logs it received and sent
(`log_type all`), and what a client saw against the client's own callbacks.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hil.broker import BrokerEndpoint
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.proxy import MqttProxy
from tests.core.conftest import needs_mosquitto
from tests.waiting import until

LEVELS = {
    3: MQTTProtocolVersion.MQTTv31,
    4: MQTTProtocolVersion.MQTTv311,
    5: MQTTProtocolVersion.MQTTv5,
}
MOSQUITTO_VERSIONS = {3: "mqttv31", 4: "mqttv311", 5: "mqttv5"}


class Mosquitto:
    """A spawned mosquitto and its log, read from a mark so a test sees only its own lines."""

    def __init__(self, broker: MosquittoBroker, endpoint: BrokerEndpoint) -> None:
        self.broker = broker
        self.endpoint = endpoint
        self._mark = 0

    def mark(self) -> None:
        self._mark = len(self._text())

    def log(self) -> str:
        return self._text()[self._mark :]

    def lines(self, pattern: str) -> list[re.Match[str]]:
        return list(re.finditer(pattern, self.log(), re.MULTILINE))

    def _text(self) -> str:
        path = self.broker.log_path
        return path.read_text(errors="replace") if path and path.exists() else ""


def start_mosquitto(folder: Path, **options) -> Iterator[Mosquitto]:
    broker = MosquittoBroker(MosquittoOptions(**options), folder)
    endpoint = broker.start()
    try:
        yield Mosquitto(broker, endpoint)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    yield from start_mosquitto(tmp_path_factory.mktemp("mosquitto"))


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    """The module's mosquitto, its log read from this test's start."""
    mosquitto.mark()
    return mosquitto


@pytest.fixture
def proxy(broker: Mosquitto) -> Iterator[MqttProxy]:
    lines: list[str] = []
    proxy = MqttProxy((broker.endpoint.host, broker.endpoint.port), sink=lines.append)
    proxy.lines = lines  # type: ignore[attr-defined]
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


class Client:
    """A paho client on its own network thread that never reconnects by itself."""

    def __init__(
        self,
        endpoint: tuple[str, int],
        client_id: str,
        level: int = 4,
        keepalive: int = 60,
        clean: bool = True,
        tls=None,
    ) -> None:
        self.endpoint = endpoint
        self.keepalive = keepalive
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=LEVELS[level],
            clean_session=clean if level != 5 else None,
            reconnect_on_failure=False,
        )
        if tls is not None:
            self.paho.tls_set_context(tls)
        self.connacks: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.disconnect_reason = None
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.paho.on_connect = lambda c, u, flags, rc, props: self.connacks.put(rc)
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = lambda c, u, message: self.messages.put(message)
        self.paho.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put(codes)

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def connect(self, timeout: float = 5.0):
        """Connect and return the CONNACK's reason code as paho reports it."""
        self.disconnected.clear()
        self.paho.connect(*self.endpoint, keepalive=self.keepalive)
        self.paho.loop_start()
        return self.connacks.get(timeout=timeout)

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> None:
        self.paho.subscribe(topic, qos)
        self.subacks.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> paho.MQTTMessageInfo:
        return self.paho.publish(topic, payload, qos)

    def message(self, timeout: float = 5.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def no_message(self, within: float) -> bool:
        try:
            self.messages.get(timeout=within)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        if self.paho.is_connected():
            self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Every client a test makes, closed at its end."""
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def mosquitto_pub(endpoint: tuple[str, int], *args: str) -> subprocess.CompletedProcess[str]:
    host, port = endpoint
    return subprocess.run(
        ["mosquitto_pub", "-h", host, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def wait_log(broker: Mosquitto, pattern: str, timeout: float = 5.0) -> list[re.Match[str]]:
    return until(lambda: broker.lines(pattern), timeout, f"mosquitto logging {pattern!r}")


def elapsed(since: float) -> float:
    return time.monotonic() - since


__all__ = ["MOSQUITTO_VERSIONS", "Client", "Mosquitto", "needs_mosquitto", "start_mosquitto"]
