"""A broker that dies mid-run is a rig error naming the broker, not a device timeout; one that
comes back within a few seconds (a restart) is simply reconnected to."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from hil.broker import free_port
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.mqtt import BrokerLost, MqttRecorder

from .conftest import needs_mosquitto

pytestmark = [needs_mosquitto, pytest.mark.repo_rig]
pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]


def mosquitto(folder: Path, port: int) -> MosquittoBroker:
    return MosquittoBroker(MosquittoOptions(port=port), folder)


async def test_a_broker_that_stays_away_fails_waits_as_a_rig_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(MqttRecorder, "RECONNECT_S", 1.0)
    broker = mosquitto(tmp_path / "b", free_port("127.0.0.1"))
    endpoint = broker.start()
    async with MqttRecorder(endpoint, ["t/status"]) as recorder:
        broker.stop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerLost, match=rf"broker {endpoint}.*check that the broker"):
            await recorder.expect("t/status", "never", timeout=30)
        assert loop.time() - started < 10, "a lost broker must not wait out the test's limit"
        with pytest.raises(BrokerLost):
            await recorder.publish("t/cmd", "x")


async def test_a_broker_that_restarts_is_reconnected_to(tmp_path) -> None:
    port = free_port("127.0.0.1")
    first = mosquitto(tmp_path / "b1", port)
    endpoint = first.start()
    async with MqttRecorder(endpoint, ["t/status"]) as recorder:
        first.stop()
        second = mosquitto(tmp_path / "b2", port)
        second.start()
        try:
            # Keep publishing until the recorder is subscribed again (mosquitto_pub cannot
            # know when that is); the recorder's wait has the deadline.
            async def publish_until_seen() -> None:
                while True:
                    await asyncio.to_thread(
                        subprocess.run,
                        [
                            "mosquitto_pub",
                            "-h",
                            endpoint.host,
                            "-p",
                            str(port),
                            "-t",
                            "t/status",
                            "-q",
                            "1",
                            "-m",
                            "after the restart",
                        ],
                        check=False,
                        timeout=5,
                    )
                    await asyncio.sleep(0.2)

            publisher = asyncio.create_task(publish_until_seen())
            try:
                record = await recorder.expect("t/status", "after the restart", timeout=20)
            finally:
                publisher.cancel()
            assert record.text == "after the restart"
            assert recorder.lost is None
            await recorder.publish("t/cmd", "still publishing")
        finally:
            second.stop()


SUITE = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

async def test_1_the_broker_dies(dut, broker):
    await dut.current_version()
    broker.stop()
    await dut.mqtt.expect(dut.topics.status_topic, "never sent", 60)

async def test_2_after(dut):
    await dut.echo("never answered")
"""


def test_a_broker_lost_mid_run_errors_that_test_and_the_rest(pytester, tmp_path) -> None:
    pytester.makepyfile(test_inner=SUITE)
    result = pytester.runpytest_subprocess(
        "--rig",
        str(ROOT / "rigs" / "sim.toml"),
        "--hil-artifacts",
        "art",
        "-p",
        "no:cacheprovider",
        timeout=180,
    )
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "BrokerLost: lost the connection to broker mqtt://127.0.0.1:" in out
    assert "could not reconnect within 10 s" in out
