"""Broker drivers against a real mosquitto and amqtt, with mosquitto_pub/_sub as the other side."""

import asyncio
import json
import subprocess

import aiomqtt
import pytest

from hil.broker import BrokerError, free_port
from hil.broker.embedded import EmbeddedBroker, EmbeddedOptions
from hil.broker.external import ExternalBroker, ExternalOptions
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.mqtt import MqttRecorder, MqttTimeout

from .conftest import needs_mosquitto


def mosquitto_pub(endpoint, topic: str, message: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            endpoint.host,
            "-p",
            str(endpoint.port),
            "-t",
            topic,
            "-m",
            message,
            "-q",
            "1",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )


def mosquitto_sub_once(endpoint, topic: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            endpoint.host,
            "-p",
            str(endpoint.port),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "10",
            "-q",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(params=[pytest.param("mosquitto", marks=needs_mosquitto), "embedded"])
def broker(request, tmp_path):
    if request.param == "mosquitto":
        driver = MosquittoBroker(MosquittoOptions(), tmp_path)
    else:
        driver = EmbeddedBroker(EmbeddedOptions(), tmp_path)
    endpoint = driver.start()
    yield driver, endpoint
    driver.stop()


async def test_recorder_sees_what_mosquitto_pub_sends(broker) -> None:
    _, endpoint = broker
    lines: list[str] = []
    async with MqttRecorder(endpoint, ["esp32_status"]) as mqtt:
        mqtt.sink = lines.append
        assert mosquitto_pub(endpoint, "esp32_status", "STATUS:ONLINE:1.0.0").returncode == 0
        record = await mqtt.expect("esp32_status", "STATUS:ONLINE:1.0.0", timeout=5)
    assert record.direction == "in" and record.qos == 1
    logged = json.loads(lines[-1])
    assert logged["topic"] == "esp32_status" and logged["payload"] == "STATUS:ONLINE:1.0.0"


async def test_mosquitto_sub_sees_what_the_recorder_publishes(broker) -> None:
    _, endpoint = broker
    async with MqttRecorder(endpoint, ["esp32_status"]) as mqtt:
        sub = mosquitto_sub_once(endpoint, "server_cmd")
        try:
            # mosquitto_sub has no ready signal; publish until it has subscribed and got one.
            for _ in range(50):
                await mqtt.publish("server_cmd", "qNOY0tmppmDP1kJJYmmTIA==")
                try:
                    out, _ = sub.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            sub.kill()
    assert out.strip() == "qNOY0tmppmDP1kJJYmmTIA=="
    assert [r.direction for r in mqtt.records][:1] == ["out"]


async def test_expect_timeout_lists_what_came(broker) -> None:
    _, endpoint = broker
    async with MqttRecorder(endpoint, ["esp32_status"]) as mqtt:
        mosquitto_pub(endpoint, "esp32_status", "STATUS:HEARTBEAT:30")
        await mqtt.expect("esp32_status", "STATUS:HEARTBEAT:30", timeout=5)
        with pytest.raises(MqttTimeout, match=r"(?s)OTA:SUCCESS.*HEARTBEAT:30"):
            await mqtt.expect("esp32_status", "OTA:SUCCESS", timeout=0.3, since=0)


@needs_mosquitto
def test_mosquitto_reports_protocol_levels(tmp_path) -> None:
    driver = MosquittoBroker(MosquittoOptions(), tmp_path)
    endpoint = driver.start()
    try:
        mosquitto_pub(endpoint, "t", "x", "-V", "mqttv31", "-i", "old-modem")
        mosquitto_pub(endpoint, "t", "x", "-V", "mqttv311", "-i", "new-modem")
    finally:
        driver.stop()
    levels = {c["client_id"]: c["protocol"] for c in driver.connections()}
    assert levels == {"old-modem": "3.1", "new-modem": "3.1.1"}


@needs_mosquitto
async def test_password_comes_from_the_named_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HIL_TEST_BROKER_PW", "s3cret-pw")
    driver = MosquittoBroker(
        MosquittoOptions(username="ESP32", password_env="HIL_TEST_BROKER_PW"), tmp_path
    )
    endpoint = driver.start()
    try:
        assert "s3cret-pw" not in repr(endpoint) and "s3cret-pw" not in str(endpoint)
        refused = mosquitto_pub(endpoint, "t", "x", "-u", "ESP32", "-P", "wrong")
        assert refused.returncode != 0
        async with MqttRecorder(endpoint, ["t"]) as mqtt:
            await mqtt.publish("t", "hello")
    finally:
        driver.stop()
    assert "s3cret-pw" not in driver.log_path.read_text()


def test_unset_password_variable_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("HIL_TEST_UNSET", raising=False)
    driver = MosquittoBroker(
        MosquittoOptions(username="u", password_env="HIL_TEST_UNSET"), tmp_path
    )
    with pytest.raises(BrokerError, match="HIL_TEST_UNSET is not set"):
        driver.start()


def test_unreachable_external_broker_names_host_and_port(tmp_path) -> None:
    port = free_port()
    driver = ExternalBroker(ExternalOptions(host="127.0.0.1", port=port, tls=False), tmp_path)
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port} is unreachable"):
        driver.start()


@needs_mosquitto
async def test_wrong_password_is_a_clear_broker_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HIL_TEST_BROKER_PW", "right")
    driver = MosquittoBroker(
        MosquittoOptions(username="ESP32", password_env="HIL_TEST_BROKER_PW"), tmp_path
    )
    endpoint = driver.start()
    try:
        wrong = type(endpoint)(endpoint.host, endpoint.port, None, "ESP32", "wrong")
        with pytest.raises(BrokerError, match="cannot connect to broker"):
            async with MqttRecorder(wrong, ["t"]):
                pass
    finally:
        driver.stop()


@needs_mosquitto
def test_stop_frees_the_port(tmp_path) -> None:
    driver = MosquittoBroker(MosquittoOptions(), tmp_path)
    endpoint = driver.start()
    driver.stop()
    assert mosquitto_pub(endpoint, "t", "x").returncode != 0


async def test_second_client_with_the_same_id_takes_the_session_over(broker) -> None:
    """MQTT 3.1.1 section 3.1.4: the server closes the first connection of a client id that
    connects again, and the second gets what is published to it."""
    _, endpoint = broker
    first = aiomqtt.Client(endpoint.host, endpoint.port, identifier="dev-1", clean_session=True)
    second = aiomqtt.Client(endpoint.host, endpoint.port, identifier="dev-1", clean_session=True)
    async with first:
        await first.subscribe("server_cmd", qos=1)
        async with second:
            with pytest.raises(aiomqtt.MqttError):
                async with asyncio.timeout(5):
                    async for _ in first.messages:
                        pass  # anything before the close is the broker keeping it open
            await second.subscribe("server_cmd", qos=1)
            for _ in range(50):  # until the subscription is in place and one arrives
                mosquitto_pub(endpoint, "server_cmd", "after-takeover")
                try:
                    async with asyncio.timeout(0.2):
                        message = await anext(aiter(second.messages))
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail("the second client got nothing published after it took over")
    assert message.payload == b"after-takeover"
