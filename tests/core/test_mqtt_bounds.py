"""Huge messages on the status topic are kept and logged only in part, so a flood of them
cannot fill the runner's memory or the artifacts."""

from __future__ import annotations

import json
import subprocess

from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.mqtt import MAX_PAYLOAD, MqttRecorder

from .conftest import needs_mosquitto

pytestmark = needs_mosquitto
MIB = 1024 * 1024


async def test_a_huge_payload_is_kept_and_logged_cut_with_its_size(tmp_path) -> None:
    broker = MosquittoBroker(MosquittoOptions(), tmp_path / "broker")
    endpoint = broker.start()
    logged: list[str] = []
    try:
        async with MqttRecorder(endpoint, ["t/status"]) as recorder:
            recorder.sink = logged.append
            big = tmp_path / "big"
            big.write_bytes(b"S" * (4 * MIB))
            for _ in range(5):
                subprocess.run(
                    [
                        "mosquitto_pub",
                        "-h",
                        endpoint.host,
                        "-p",
                        str(endpoint.port),
                        "-t",
                        "t/status",
                        "-q",
                        "1",
                        "-f",
                        str(big),
                    ],
                    check=True,
                    timeout=30,
                )
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-h",
                    endpoint.host,
                    "-p",
                    str(endpoint.port),
                    "-t",
                    "t/status",
                    "-q",
                    "1",
                    "-m",
                    "small after",
                ],
                check=True,
                timeout=30,
            )
            await recorder.expect("t/status", "small after", timeout=30)
    finally:
        broker.stop()
    huge = [r for r in recorder.records if r.cut]
    assert len(huge) == 5
    assert all(len(r.payload) == MAX_PAYLOAD and r.size == 4 * MIB for r in huge)
    assert not recorder.records[-1].cut and recorder.records[-1].text == "small after"
    entries = [json.loads(line) for line in logged]
    assert all(len(e["payload"]) <= MAX_PAYLOAD for e in entries)
    assert [e.get("size") for e in entries][:5] == [4 * MIB] * 5
