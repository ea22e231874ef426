"""OTA over MQTT (PROTOCOL.md, seed scenario 2), with the sender misbehaving on purpose.

Positive plans drop, duplicate or reorder chunks: the device must still write the image in
order, ask for what is missing, verify it at OTA:END, reboot into it and report its version.
Negative cases must be refused with the right reason while the old firmware keeps running.
"""

import asyncio
import itertools

import pytest

from hil.ota.faults import FaultPlan
from hil.ota.sender import OtaError, OtaRefused
from hil.protocol import ota
from hil.protocol.image import build_image

pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

IMAGE_SIZE = 12 * 1024  # a real-format image of 25 chunks: enough for every plan
_versions = itertools.count(1)

# Every sender fault plan except the two that damage the image itself.
REFUSED = {"corrupt_byte", "truncate"}
DELIVERED_DESPITE = [name for name in FaultPlan.NAMES if name not in REFUSED]
# Plans whose dropped chunk is followed by later ones in the window: the device sees the gap.
GAP_PLANS = {"drop_first", "drop_middle", "drop_burst_5", "drop_random_10pct"}
# Merge CI updates once, without faults (-m smoke); the plans that take longest are slow.
PLAN_MARKS = {"none": pytest.mark.smoke, "drop_last": pytest.mark.slow, "reorder": pytest.mark.slow}


def new_image(tag: str, size: int = IMAGE_SIZE) -> tuple[bytes, str]:
    """A valid app image with a version the device does not run yet."""
    version = f"2.{next(_versions)}.0-{tag}"[:31]
    return build_image(version, size, project="hil-suite", seed=hash(tag) & 0xFFFF), version


def plan_for(dut, name: str, image: bytes) -> FaultPlan:
    total = ota.chunk_count(len(image), dut.profile.ota.chunk_data_size)
    return FaultPlan.named(name, total, seed=7)


async def update_and_reboot(dut, image: bytes, plan: FaultPlan | None = None):
    """Push, then wait for the planned reboot and STATUS:ONLINE; return (result, version).

    The reboot is proven the way the rig can show it (the console port vanishing, or the boot
    banner on a console that survives resets), never by lines a real port may lose.
    """
    since, console_mark = dut.mqtt.mark(), dut.console.mark()
    with dut.console.reboot_expected():
        result = await dut.ota(image, faults=plan)
        await dut.wait_restart(since=console_mark)
        version = await dut.wait_online(dut.limits.reboot_s, since=since)
    return result, version


@pytest.mark.parametrize(
    "plan_name", [pytest.param(name, marks=PLAN_MARKS.get(name, ())) for name in DELIVERED_DESPITE]
)
async def test_ota_delivers_the_image_despite(dut, measurements, plan_name: str) -> None:
    await dut.current_version()
    image, version = new_image(plan_name)
    plan = plan_for(dut, plan_name, image)

    result, reported = await update_and_reboot(dut, image, plan)

    measurements.record("ota_throughput", result.throughput / 1000, "kB/s")
    measurements.record("ota_retransmissions", result.retransmissions, "chunks")
    measurements.record("ota_requests", result.requests_seen, "messages")
    assert isinstance(result.answer, ota.Success)
    assert reported == version, "after the reboot the device must run the new image"
    if plan_name in GAP_PLANS:
        assert result.requests_seen >= 1, "a chunk after a gap must draw OTA:REQUEST"


async def refused(dut, image: bytes, plan: FaultPlan | None = None) -> OtaRefused:
    """Push an image the device must refuse; check it keeps running its old firmware."""
    before = await dut.current_version()
    console_mark = dut.console.mark()
    try:
        result = await dut.ota(image, faults=plan)
    except OtaRefused as exc:
        error = exc
    else:
        # pytest.raises would only say DID NOT RAISE; the device's answer is the clue.
        pytest.fail(
            f"the device accepted an image it must refuse: it answered {str(result.answer)!r}, "
            f"not OTA:ERROR:<reason> ({result!r})",
            pytrace=False,
        )
    failed = await dut.console.expect(
        dut.profile.console.ota_failed, dut.limits.echo_s, since=console_mark
    )
    assert failed["reason"] == error.reason
    reply = await dut.echo("still on the old firmware")
    assert reply.first.text == "still on the old firmware"
    assert dut.version == before
    return error


async def test_corrupted_byte_is_refused_at_verify(dut) -> None:
    image, _ = new_image("corrupt")
    error = await refused(dut, image, plan_for(dut, "corrupt_byte", image))
    assert error.reason == "verify"


async def test_truncated_image_is_refused_as_size_mismatch(dut) -> None:
    image, _ = new_image("truncate")
    error = await refused(dut, image, plan_for(dut, "truncate", image))
    assert error.reason == "size_mismatch"


async def test_seed_zero_file_is_not_an_image(dut) -> None:
    # The seed's `dd if=/dev/zero bs=2048 count=1`: no 0xE9 magic, so no bootloader takes it.
    error = await refused(dut, bytes(2048))
    assert error.reason == "verify"


async def test_oversize_begin_is_refused(dut) -> None:
    await dut.current_version()
    for size in (dut.profile.ota.partition_size + 1, 0):
        sent = await dut.mqtt.publish(dut.topics.firmware_topic, ota.begin(size), dut.topics.qos)
        await dut.mqtt.expect(
            dut.topics.status_topic, ota.error("size"), dut.limits.ota_reply_s, since=sent.index
        )


async def test_begin_while_busy_is_refused(dut) -> None:
    await dut.current_version()
    size = 4096
    first = await dut.mqtt.publish(dut.topics.firmware_topic, ota.begin(size), dut.topics.qos)
    await dut.mqtt.expect(
        dut.topics.status_topic, ota.ready(size), dut.limits.ota_reply_s, since=first.index
    )
    again = await dut.mqtt.publish(dut.topics.firmware_topic, ota.begin(size), dut.topics.qos)
    await dut.mqtt.expect(
        dut.topics.status_topic, ota.error("busy"), dut.limits.ota_reply_s, since=again.index
    )
    # End the open update: nothing was written, so the device must refuse it and carry on.
    end = await dut.mqtt.publish(dut.topics.firmware_topic, ota.END, dut.topics.qos)
    await dut.mqtt.expect(
        dut.topics.status_topic, ota.error("size_mismatch"), dut.limits.ota_reply_s, since=end.index
    )
    reply = await dut.echo("not busy any more")
    assert reply.first.text == "not busy any more"


@pytest.mark.slow
@pytest.mark.needs("power")
async def test_power_cut_mid_update_keeps_old_firmware_and_next_update_succeeds(dut) -> None:
    before = await dut.current_version()
    image, _ = new_image("cut")
    total = ota.chunk_count(len(image), dut.profile.ota.chunk_data_size)
    since = dut.mqtt.mark()
    push = asyncio.create_task(dut.ota(image))
    try:
        await dut.mqtt.expect(
            dut.topics.status_topic,
            lambda r: (
                isinstance(p := ota.parse_reply(r.text), ota.Progress) and p.number >= total // 3
            ),
            dut.limits.ota_reply_s * 3,
            since=since,
        )
        await dut.power_cut(dut.profile.firmware.retry_delay_s)
        with pytest.raises(OtaError):
            await push
    finally:  # a failed wait must not leave the push running into the next test
        push.cancel()
        await asyncio.gather(push, return_exceptions=True)
    assert await dut.wait_online(dut.limits.recovery_s, since=since) == before

    image, version = new_image("after-cut")
    result, reported = await update_and_reboot(dut, image)
    assert isinstance(result.answer, ota.Success)
    assert reported == version
