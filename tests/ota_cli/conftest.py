"""A password-protected mosquitto for the module, rig files pointing the twin at it, and a
subscriber that records what crossed it, so tests check the device from outside `hil ota`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from hil.broker import BrokerEndpoint
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.profile import load_profile

SIM_RIG = Path(__file__).resolve().parents[2] / "rigs" / "sim.toml"
USER = "hil-ota"
PASSWORD_ENV = "HIL_OTA_TEST_PASSWORD"
PASSWORD = "s3cret-ota-pw"
TOPICS = load_profile().mqtt


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerEndpoint]:
    """One mosquitto for the module; the twins started by `hil ota push` connect to it."""
    saved = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = PASSWORD
    mosquitto = MosquittoBroker(
        MosquittoOptions(username=USER, password_env=PASSWORD_ENV),
        tmp_path_factory.mktemp("mosquitto"),
    )
    try:
        yield mosquitto.start()
    finally:
        mosquitto.stop()
        if saved is None:
            os.environ.pop(PASSWORD_ENV, None)
        else:
            os.environ[PASSWORD_ENV] = saved


@pytest.fixture
def rig_file(broker: BrokerEndpoint, tmp_path: Path) -> Path:
    """rigs/sim.toml with its [broker] table pointing at the module's mosquitto."""
    table = (
        f'[broker]\ndriver = "external"\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'tls = false\nusername = "{USER}"\npassword_env = "{PASSWORD_ENV}"\n'
    )
    out, skipping = [], False
    for line in SIM_RIG.read_text().splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[broker]"
            if skipping:
                out.append(table)
        if not skipping:
            out.append(line)
    path = tmp_path / "sim.toml"
    path.write_text("\n".join(out) + "\n")
    return path


class Watch:
    """Every message on the status and firmware topics, recorded by an independent client."""

    def __init__(self, endpoint: BrokerEndpoint, timeout: float = 10.0) -> None:
        self.messages: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ota-cli-watch")
        self._client.username_pw_set(USER, PASSWORD)
        self._client.on_connect = lambda c, *_: c.subscribe(
            [(TOPICS.status_topic, 1), (TOPICS.firmware_topic, 1)]
        )
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        if not subscribed.wait(timeout):
            self.close()
            raise RuntimeError(f"watch client not subscribed on {endpoint} within {timeout} s")

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self.messages.append((message.topic, message.payload.decode("utf-8", "replace")))
            self._cond.notify_all()

    def on(self, topic: str) -> list[str]:
        with self._cond:
            return [payload for t, payload in self.messages if t == topic]

    def wait_for(self, topic: str, payload: str, timeout: float = 10.0) -> None:
        """Wait until `payload` has been seen on `topic`; fail with what was seen instead."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (topic, payload) not in self.messages:
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [p for t, p in self.messages if t == topic][-8:]
                    raise AssertionError(f"no {payload!r} on {topic} in {timeout} s; saw {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def watch(broker: BrokerEndpoint) -> Iterator[Watch]:
    w = Watch(broker)
    yield w
    w.close()
