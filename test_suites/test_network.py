"""The link between modem and broker failing the way cellular networks and brokers fail, made
to by the rig's MQTT proxy (`[broker] proxy = true`), against whatever broker the rig uses.

A link gone silent without closing is the modem's MQTT keepalive to notice (keepalive x 1.5);
a dropped, refused or taken-over connection the firmware's recovery states to survive. Each
time the device must come back within the lab limit, really subscribed (an echo answered),
without fighting the broker in a reconnect loop. Deadlines come from the rig's profile.
"""

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiomqtt
import pytest

from hil.mqtt import tls_context
from hil.ota.sender import OtaError
from hil.protocol.image import build_image
from hil.proxy import ProxyTimeout

pytestmark = [
    pytest.mark.hil,
    pytest.mark.needs("proxy"),
    pytest.mark.asyncio(loop_scope="session"),
]

SERVER_UNAVAILABLE = 3  # CONNACK return code (MQTT 3.1.1 section 3.2.2.3)
POLL_S = 0.05
OTA_IMAGE_SIZE = 8 * 1024


@contextlib.contextmanager
def faults_of(proxy) -> Iterator[None]:
    """Undo the test's faults as its body ends: the check that the device still answers runs
    before fixtures are torn down, and a refusal left over would keep the device out."""
    try:
        yield
    finally:
        proxy.clear()


async def until(found: Callable[[], Any], timeout: float, what: str) -> Any:
    """`found()`'s first truthy answer, looked for until `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while not (value := found()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(POLL_S)
    return value


def device_connects(dut, proxy, since: int) -> list:
    prefix = dut.topics.client_id_prefix
    return [c for c in proxy.connects[since:] if c.client_id.startswith(prefix)]


def entered(dut, since: int) -> list[str]:
    """The states the device entered since console line `since`, in order."""
    state = re.compile(dut.profile.console.state)
    found = (state.search(line.text) for line in dut.console.since(since))
    return [m["dst"] for m in found if m]


async def quiet_link(dut, proxy) -> None:
    """Wait for a heartbeat and the broker's PUBACK of it to pass, then two retry delays.

    From then until the next heartbeat only the modem's keepalive can find the link dead: a
    heartbeat caught in a blackhole would fail on its own (no PUBACK) and prove nothing. The
    keepalive's clock runs from the PUBACK, so a link that dies a moment later must be found
    within keepalive x 1.5 of dying, with that moment to spare.
    """
    heartbeat = re.compile(dut.profile.status.heartbeat)
    since = dut.mqtt.mark()
    await dut.mqtt.expect(
        dut.topics.status_topic,
        heartbeat,
        dut.profile.firmware.heartbeat_s + dut.limits.echo_s,
        since=since,
    )

    def acked() -> dict | None:
        frames = proxy.frames
        sent = [
            f
            for f in frames
            if f.get("type") == "PUBLISH"
            and f["direction"] == "up"
            and f["topic"] == dut.topics.status_topic
            and f["qos"]
        ]
        if not sent:
            return None
        last = sent[-1]
        return next(
            (
                f
                for f in frames
                if f.get("type") == "PUBACK"
                and f["direction"] == "down"
                and (f["conn"], f["packet_id"]) == (last["conn"], last["packet_id"])
            ),
            None,
        )

    if dut.topics.qos:
        await until(acked, dut.limits.echo_s, "the broker's PUBACK of the heartbeat")
    await asyncio.sleep(2 * dut.profile.firmware.retry_delay_s)


async def online_and_echoing(dut, since: int, text: str) -> float:
    """Wait for STATUS:ONLINE after MQTT record `since`; check an echo; when ONLINE came."""
    await dut.wait_online(dut.limits.recovery_s, since=since)
    online_at = dut.mqtt.records[dut.mqtt.cursor - 1].time
    reply = await dut.echo(text)
    assert reply.first.text == text, "the device must be subscribed again after reconnecting"
    return online_at


@pytest.mark.smoke
async def test_blackhole_is_noticed_by_the_keepalive_and_recovered(
    dut, proxy, measurements
) -> None:
    await dut.current_version()
    keepalive = dut.topics.keepalive_s
    await quiet_link(dut, proxy)
    since_mqtt, since_console = dut.mqtt.mark(), dut.console.mark()

    proxy.blackhole(True)
    holed_at = time.time()
    try:
        lost = await dut.console.expect(  # waited for past the limit, to measure a late one
            dut.profile.console.network_lost,
            keepalive * 1.5 + dut.limits.detect_s,
            since=since_console,
        )
    finally:
        proxy.blackhole(False)
    lifted_at = time.time()
    online_at = await online_and_echoing(dut, since_mqtt, "through after the dead zone")

    detection = measurements.record(
        "blackhole_detection", lost.time - holed_at, "s", high=keepalive * 1.5
    )
    recovery = measurements.record(
        "blackhole_recovery", online_at - lifted_at, "s", high=dut.limits.recovery_s
    )
    assert detection.passed, (
        f"a dead link was noticed {detection.value:.1f} s after it went silent; the MQTT "
        f"keepalive of {keepalive} s must find it within {keepalive * 1.5:g} s"
    )
    assert recovery.passed, str(recovery)
    recovery_path = dut.profile.firmware.recovery_path
    assert recovery_path[0] in entered(dut, since_console), "recovery states never entered"


async def test_connect_refused_twice_then_accepted(dut, proxy, measurements) -> None:
    """Each refused CONNECT is a failed step, tried again within the firmware's retry budget
    (PROTOCOL.md: every step retries MAX_RETRIES times, RETRY_DELAY apart)."""
    await dut.current_version()
    since_mqtt, first = dut.mqtt.mark(), len(proxy.connects)
    budget = dut.profile.firmware.retry_budget_s

    with faults_of(proxy):
        proxy.refuse_connects(2, SERVER_UNAVAILABLE)
        dropped_at = time.time()
        assert proxy.drop() >= 1, "the device had no connection through the proxy to drop"
        await proxy.wait_connect(dut.limits.detect_s, since=first)
        for refused in (1, 2):
            try:
                await proxy.wait_connect(budget, since=first + refused)
            except ProxyTimeout:
                pytest.fail(
                    f"refused CONNECT {refused} of 2 was not tried again within the retry "
                    f"budget ({budget:g} s)",
                    pytrace=False,
                )
        online_at = await online_and_echoing(dut, since_mqtt, "accepted at the third try")

    connects = device_connects(dut, proxy, first)
    measurements.record("refused_connect_recovery", online_at - dropped_at, "s")
    assert len(connects) == 3, (
        f"the device made {len(connects)} CONNECTs after two refusals; it must try again "
        "after each and be in on the third"
    )


async def test_broker_restart_is_ridden_out(dut, proxy, measurements) -> None:
    """A broker going away for longer than the firmware's retry budget and coming back: every
    connection dropped, then every CONNECT answered "server unavailable" while it is down."""
    await dut.current_version()
    since_mqtt, first = dut.mqtt.mark(), len(proxy.connects)
    down_s = 2 * dut.profile.firmware.retry_budget_s

    with faults_of(proxy):
        proxy.refuse_connects(1000, SERVER_UNAVAILABLE)
        proxy.drop()
        await asyncio.sleep(down_s)  # the outage itself: how long the broker stays away
    back_at = time.time()
    online_at = await online_and_echoing(dut, since_mqtt, "the broker is back")

    refused = len(device_connects(dut, proxy, first)) - 1
    measurements.record("broker_restart_recovery", online_at - back_at, "s")
    measurements.record("connects_while_down", refused, "CONNECTs")
    assert refused >= 2, (
        f"the device tried {refused} times in {down_s:g} s while the broker was away; it "
        "must keep trying, as after any refusal"
    )


async def intrude(dut, client_id: str, hold_s: float) -> int:
    """Hold `client_id` for `hold_s`, connecting again a retry delay after being thrown off,
    as a second device with the same id does; then leave. How often it was thrown off."""
    endpoint = dut.mqtt.endpoint
    deadline = time.monotonic() + hold_s
    thrown_off = 0
    while (left := deadline - time.monotonic()) > 0:
        client = aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            tls_context=tls_context(endpoint),
            timeout=10,
        )
        try:
            async with client:
                async with asyncio.timeout(left):
                    async for _ in client.messages:  # ends, raising, when thrown off
                        pass
        except TimeoutError:
            return thrown_off  # held to the end: leaves with a DISCONNECT
        except aiomqtt.MqttError:
            thrown_off += 1
        await asyncio.sleep(dut.profile.firmware.retry_delay_s)
    return thrown_off


async def test_session_taken_over_is_won_back_without_a_fight(dut, proxy, measurements) -> None:
    """Another client connects with the device's client id, and again whenever it is thrown
    off: the broker closes the older connection each time (MQTT 3.1.1 section 3.1.4). The
    device reconnects and works without throwing the other off in turn, and once the other
    has left it stays connected."""
    await dut.current_version()
    first = len(proxy.connects)
    current = device_connects(dut, proxy, 0)
    assert current, "the proxy saw no CONNECT of the device"
    since_mqtt = dut.mqtt.mark()
    budget = dut.profile.firmware.retry_budget_s

    taken_at = time.time()
    thrown_off = await intrude(dut, current[-1].client_id, 2 * budget)
    await dut.wait_online(dut.limits.recovery_s, since=since_mqtt)
    online_at = dut.mqtt.records[dut.mqtt.cursor - 1].time
    fought = device_connects(dut, proxy, first)
    measurements.record("takeover_recovery", online_at - taken_at, "s", high=dut.limits.recovery_s)
    measurements.record("takeover_connects", len(fought), "CONNECTs", high=2)
    measurements.record("intruder_thrown_off", thrown_off, "times", high=0)
    assert len(fought) <= 2 and not thrown_off, (
        f"{len(fought)} CONNECTs after one takeover, and the other client was thrown off "
        f"{thrown_off} times: the device is fighting for the session with its client id"
    )
    reply = await dut.echo("mine again")
    assert reply.first.text == "mine again"
    settled = len(device_connects(dut, proxy, first))
    await asyncio.sleep(budget)  # long enough for a reconnect loop to show
    reply = await dut.echo("still mine")
    assert reply.first.text == "still mine"
    connects = device_connects(dut, proxy, first)
    assert len(connects) == settled, (
        f"the device connected {len(connects) - settled} more times once it was back online"
    )


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_puback_lost_during_ota_never_corrupts_the_update(
    dut, proxy, measurements, direction: str
) -> None:
    """PUBACKs lost mid-update: the device's for chunks ("up") or the broker's for the
    device's answers ("down"). The update completes and the new version runs, or it fails
    with the old version still running; never a boot into a damaged image."""
    before = await dut.current_version()
    version = f"3.{int(time.time() * 1000) % 100000}.0-puback-{direction}"[:31]
    image = build_image(version, OTA_IMAGE_SIZE, project="hil-suite", seed=len(version))
    lost = []

    def lose_pubacks(acked: int, total: int, _retransmissions: int) -> None:
        if not lost and acked >= total // 3:
            proxy.drop_puback(direction=direction, count=2)
            lost.append(acked)

    since_mqtt, since_console = dut.mqtt.mark(), dut.console.mark()
    with dut.console.reboot_expected(), faults_of(proxy):
        try:
            await dut.ota(image, on_progress=lose_pubacks)
        except OtaError as exc:
            failure: OtaError | None = exc
        else:
            failure = None
            running = await dut.wait_online(dut.limits.reboot_s, since=since_mqtt)
    assert lost, "the update ended before any PUBACK was lost"
    measurements.record("ota_delivered_despite_lost_pubacks", failure is None, "bool")
    if failure is None:
        assert running == version, (
            f"the update was acknowledged but the device runs {running!r}, not {version!r}"
        )
        return
    network_lost = re.compile(dut.profile.console.network_lost)
    if any(network_lost.search(line.text) for line in dut.console.since(since_console)):
        await dut.wait_online(dut.limits.recovery_s, since=since_mqtt)
    running = await dut.current_version()
    assert running == before, (
        f"the update failed ({failure}) yet the device runs {running!r}, not its old {before!r}"
    )
    reply = await dut.echo("old image, intact")
    assert reply.first.text == "old image, intact"
