"""Broker-side check of how the device connects: MQTT 3.1.1, as the profile demands.

SIM7600-family modems speak MQTT 3.1 unless told `AT+CMQTTCFG="version",0,4`, and brokers
that require 3.1.1 then refuse them: a real field bug, visible only from the broker's side.
"""

import pytest

pytestmark = [
    pytest.mark.hil,
    pytest.mark.needs("broker_log"),
    pytest.mark.asyncio(loop_scope="session"),
]


@pytest.mark.smoke
async def test_device_connects_with_the_profiles_mqtt_version(dut, broker) -> None:
    await dut.current_version()
    prefix = dut.topics.client_id_prefix
    device = [c for c in broker.connections() if c["client_id"].startswith(prefix)]
    assert device, f"the broker saw no client whose id starts with {prefix!r}"
    levels = {c["client_id"]: c["protocol_level"] for c in device}
    wanted = dut.topics.protocol_level
    assert set(levels.values()) == {wanted}, (
        f"device connected with protocol levels {levels}; the profile requires {wanted}"
    )


async def test_device_connects_with_clean_session_and_keepalive(dut, broker) -> None:
    await dut.current_version()
    device = [
        c for c in broker.connections() if c["client_id"].startswith(dut.topics.client_id_prefix)
    ]
    assert device
    assert all(c["clean_session"] for c in device)
    assert {c["keepalive"] for c in device} == {dut.topics.keepalive_s}
