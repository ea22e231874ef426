"""How the device connects, seen from the network: MQTT 3.1.1, a clean session, the profile's
keepalive and client id.

SIM7600-family modems speak MQTT 3.1 unless told `AT+CMQTTCFG="version",0,4`, and brokers
that require 3.1.1 then refuse them: a real field bug, visible only on the wire. Through the
rig's MQTT proxy (`[broker] proxy = true`) the checks read the device's own CONNECT packets,
whatever the broker; without one, the log of a broker that reports its clients (the spawned
mosquitto), which names the level but not the protocol name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from hil.proxy.codec import PROTOCOL_NAMES

pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]
HARNESS_PREFIX = "hil-"  # the harness's own clients, which a broker's log lists too


@dataclass(frozen=True)
class Connect:
    """One CONNECT of the device, as far as the source tells."""

    client_id: str
    protocol_name: str | None  # None: a broker's log does not say
    level: int
    clean_session: bool
    keepalive: int


@pytest.fixture
def device_connects(rig, request: pytest.FixtureRequest) -> Callable[[], list[Connect]]:
    """Every CONNECT the device made this session: the proxy's records, else the broker's log."""
    if "proxy" in rig.capabilities:
        proxy = request.getfixturevalue("proxy")
        return lambda: [
            Connect(c.client_id, c.protocol_name, c.level, c.clean_session, c.keepalive)
            for c in proxy.connects
        ]
    if "broker_log" in rig.capabilities:
        broker = request.getfixturevalue("broker")
        return lambda: [
            Connect(c["client_id"], None, c["protocol_level"], c["clean_session"], c["keepalive"])
            for c in broker.connections()
            if not c["client_id"].startswith(HARNESS_PREFIX)
        ]
    pytest.skip(
        f"needs proxy or broker_log: rig {rig.name!r} has neither ([broker] proxy = true, or a "
        "broker driver that reports its clients)"
    )


async def connects_of(dut, device_connects: Callable[[], list[Connect]]) -> list[Connect]:
    await dut.current_version()  # the device is online: it has connected at least once
    found = device_connects()
    assert found, "no CONNECT of the device was seen, though it is online"
    return found


@pytest.mark.smoke
async def test_device_connects_with_the_profiles_mqtt_version(dut, device_connects) -> None:
    wanted = dut.topics.protocol_level
    seen = {(c.protocol_name, c.level) for c in await connects_of(dut, device_connects)}
    allowed = {(PROTOCOL_NAMES[wanted], wanted), (None, wanted)}
    assert seen <= allowed, (
        f"device connected as {sorted(seen, key=str)} (protocol name, level); the profile "
        f"requires {PROTOCOL_NAMES[wanted]!r} level {wanted}"
    )


async def test_device_connects_with_clean_session_and_keepalive(dut, device_connects) -> None:
    found = await connects_of(dut, device_connects)
    assert all(c.clean_session for c in found), (
        f"device asked to keep its session: {[c.client_id for c in found if not c.clean_session]}"
    )
    keepalives = {c.keepalive for c in found}
    assert keepalives == {dut.topics.keepalive_s}, (
        f"device connected with keepalive {sorted(keepalives)} s; the profile says "
        f"{dut.topics.keepalive_s} s"
    )


async def test_device_client_id_has_the_profiles_prefix(dut, device_connects) -> None:
    prefix = dut.topics.client_id_prefix
    ids = {c.client_id for c in await connects_of(dut, device_connects)}
    wrong = sorted(i for i in ids if not i.startswith(prefix))
    assert not wrong, f"device connected as {wrong}; the profile's client ids start {prefix!r}"
