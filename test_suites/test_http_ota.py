"""HTTP OTA with version check and rollback (seed 003), against the image server the suite
starts where the profile says the device reaches it (http_ota.server_host): over HTTPS on a
virtual rig whose broker speaks TLS on the session's certificates (the device trusts that CA),
else over HTTP (hil.ota.http_server.session_https).

The device is told the server's URL on the firmware topic. It must read /version and refuse a
version that is not newer, naming both; download the image in byte ranges and, when the
connection is cut, go on from the byte it has; refuse a download that does not verify and keep
running; boot a good one; and come back on its old version, saying so, when the new image
fails its self-test. The server's request log lands in each test's `http.jsonl`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

import pytest

from hil.mqtt import MqttRecord
from hil.ota.http_server import ImageServer, session_https
from hil.plugin import artifact_store
from hil.protocol import http_ota
from hil.protocol.image import build_image

pytestmark = [
    pytest.mark.hil,
    pytest.mark.needs("http_ota"),
    pytest.mark.asyncio(loop_scope="session"),
]

IMAGE_SIZE = 20 * 1024  # several range requests at UART speed, a few seconds
PROJECT = "hil-suite"
# An app built for the lab's self-test failure: the reference firmware (and the twin) fails the
# self-test of an app whose project name ends so.
SELFTEST_FAILS = "hil-suite-selftest-fail"
OLDER = "0.0.1-older"  # older than any release a device runs but 0.0.0
_serial = itertools.count(1)


@pytest.fixture
def serve(
    request: pytest.FixtureRequest, dut, hil_session
) -> Iterator[Callable[[bytes], ImageServer]]:
    """`serve(image)`: the image server, started for this test and stopped after it."""
    sink = artifact_store(request.node).sink("http.jsonl")
    servers: list[ImageServer] = []
    contract = dut.profile.http_ota
    tls = session_https(hil_session.tls.pki if hil_session.tls else None, contract.server_host)

    def start(image: bytes) -> ImageServer:
        server = ImageServer.for_profile(
            image, contract, tls=tls, on_request=lambda r: sink(r.to_json() + "\n")
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def not_newer_than(running: str) -> str:
    """A version the device must refuse over `running`: an older one, else its own release
    again (equal is not newer), whatever a previous run left on the device."""
    return OLDER if not http_ota.is_newer(OLDER, running) else f"{running}-again"[:31]


def newer_than(running: str, tag: str) -> str:
    """A version the device must take over `running`: the next major release."""
    major = (http_ota.release(running) or (0,))[0] + 1
    return f"{major}.{next(_serial)}.0-{tag}"[:31]


async def offer(dut, server: ImageServer) -> MqttRecord:
    text = http_ota.fill(dut.profile.http_ota.url, url=server.url)
    return await dut.mqtt.publish(dut.topics.firmware_topic, text, dut.topics.qos)


def said(dut, template: str) -> Callable[[MqttRecord], bool]:
    return lambda record: http_ota.match(template, record.text) is not None


async def expect(dut, template: str, since: int, timeout: float | None = None) -> MqttRecord:
    """The device's next message of `template` at or after record `since`."""
    limit = dut.profile.http_ota.download_s if timeout is None else timeout
    return await dut.mqtt.expect(dut.topics.status_topic, said(dut, template), limit, since=since)


def is_online(dut) -> Callable[[MqttRecord], bool]:
    online = re.compile(dut.profile.status.online)
    return lambda record: online.fullmatch(record.text) is not None


async def final_answer(dut, since: int) -> MqttRecord:
    """How the update ended: refused, failed, or the device back online (a reboot)."""
    contract = dut.profile.http_ota
    ends = [said(dut, contract.refused), said(dut, contract.failed), is_online(dut)]
    return await dut.mqtt.expect(
        dut.topics.status_topic,
        lambda record: any(end(record) for end in ends),
        contract.download_s,
        since=since,
    )


async def downloaded(dut, sent: MqttRecord, measurements) -> MqttRecord:
    """Wait for the whole image; record how long the download took and its throughput."""
    contract = dut.profile.http_ota
    checking = await expect(dut, contract.checking, sent.index)

    def complete(record: MqttRecord) -> bool:
        fields = http_ota.match(contract.downloading, record.text)
        return fields is not None and fields["received"] == fields["total"]

    last = await dut.mqtt.expect(
        dut.topics.status_topic, complete, contract.download_s, since=checking.index
    )
    total = int(http_ota.match(contract.downloading, last.text)["total"])
    seconds = last.time - checking.time
    measurements.record("http_download_s", seconds, "s")
    measurements.record("http_throughput", total / max(seconds, 1e-3) / 1000, "kB/s")
    return last


def assert_ranges_cover(server: ImageServer) -> None:
    """The image went out as byte ranges that together cover it."""
    served = [r for r in server.image_requests() if r.complete]
    assert served and all(r.range is not None for r in served), "each request asks a range"
    covered = set()
    for r in served:
        covered.update(range(r.start, r.start + r.length))
    assert covered == set(range(server.size)), "the ranges served leave part of the image out"


async def still_running(dut, before: str, since: int) -> None:
    """The old firmware answers and never restarted (the plugin charges a reboot too)."""
    reply = await dut.echo("still on the old firmware")
    assert reply.first.text == "still on the old firmware"
    online = list(filter(is_online(dut), dut.mqtt.received(dut.topics.status_topic, since=since)))
    assert not online, f"the device reconnected or rebooted: {online[0].text}"
    assert await dut.current_version() == before


@pytest.mark.smoke
async def test_good_update_comes_online_as_the_new_version(dut, serve, measurements) -> None:
    before = await dut.current_version()
    version = newer_than(before, "http")
    server = serve(build_image(version, IMAGE_SIZE, project=PROJECT, seed=1))
    console_mark = dut.console.mark()
    with dut.console.reboot_expected():
        sent = await offer(dut, server)
        last = await downloaded(dut, sent, measurements)
        await dut.wait_restart(since=console_mark)
        reported = await dut.wait_online(dut.limits.reboot_s, since=last.index)
    assert reported == version, f"after the update the device runs {reported}, not {version}"
    assert server.requests[0].path == dut.profile.http_ota.version_path, "/version first"
    assert_ranges_cover(server)


async def test_a_version_not_newer_is_refused_naming_both(dut, serve) -> None:
    before = await dut.current_version()
    offered = not_newer_than(before)
    server = serve(build_image(offered, IMAGE_SIZE, project=PROJECT, seed=2))
    sent = await offer(dut, server)
    answer = await final_answer(dut, sent.index)
    fields = http_ota.match(dut.profile.http_ota.refused, answer.text)
    assert fields is not None, f"the device did not refuse {offered}; it said {answer.text!r}"
    assert fields == {"running": before, "offered": offered}
    fetched = [r.path for r in server.requests if r.method == "GET"]
    assert fetched == [dut.profile.http_ota.version_path], f"it fetched more: {fetched}"
    await still_running(dut, before, sent.index)


async def test_a_cut_download_resumes_from_the_byte_it_had(dut, serve, measurements) -> None:
    before = await dut.current_version()
    version = newer_than(before, "http-cut")
    server = serve(build_image(version, IMAGE_SIZE, project=PROJECT, seed=3))
    cut_at = IMAGE_SIZE // 2
    server.cut_at(cut_at)
    contract = dut.profile.http_ota
    with dut.console.reboot_expected():
        sent = await offer(dut, server)
        resumed = await expect(dut, contract.resumed, sent.index)
        at = int(http_ota.match(contract.resumed, resumed.text)["at"])
        log = list(server.image_requests())
        cut = next((i for i, r in enumerate(log) if not r.complete), None)
        assert cut is not None, "the device resumed, but no download was cut"
        assert log[cut].sent == cut_at - log[cut].start, "the server cut where it was told"
        assert log[cut].start <= at <= cut_at, (
            f"the device resumed at byte {at}: what it had is bytes up to {cut_at}, "
            f"of which it asked for those from {log[cut].start} in the request that was cut"
        )
        again = log[cut + 1]
        assert again.range is not None and again.start == at, (
            f"after the cut the device asked {again.range!r}, not a range from byte {at}"
        )
        last = await downloaded(dut, sent, measurements)
        reported = await dut.wait_online(dut.limits.reboot_s, since=last.index)
    assert reported == version, "the image must arrive whole: the device boots it"
    assert_ranges_cover(server)


async def test_a_corrupted_download_is_refused_and_the_old_version_runs(
    dut, serve, measurements
) -> None:
    before = await dut.current_version()
    server = serve(build_image(newer_than(before, "http-bad"), IMAGE_SIZE, project=PROJECT))
    server.corrupt()
    console_mark = dut.console.mark()
    sent = await offer(dut, server)
    last = await downloaded(dut, sent, measurements)
    answer = await final_answer(dut, last.index)
    fields = http_ota.match(dut.profile.http_ota.failed, answer.text)
    assert fields is not None, f"a corrupted image was not refused: {answer.text!r}"
    assert fields["reason"] == "verify"
    failed = await dut.console.expect(
        dut.profile.console.ota_failed, dut.limits.echo_s, since=console_mark
    )
    assert failed["reason"] == "verify"
    await still_running(dut, before, sent.index)


async def test_an_image_failing_its_self_test_is_rolled_back(dut, serve, measurements) -> None:
    before = await dut.current_version()
    bad = newer_than(before, "http-selftest")
    server = serve(build_image(bad, IMAGE_SIZE, project=SELFTEST_FAILS, seed=5))
    contract = dut.profile.http_ota
    with dut.console.reboot_expected():
        sent = await offer(dut, server)
        last = await downloaded(dut, sent, measurements)
        # Into the new image, its self-test fails, back to the old one.
        reported = await dut.wait_online(dut.limits.reboot_s * 2, since=last.index)
    assert reported == before, f"the device came back as {reported}, not as {before}"
    said_rollback = said(dut, contract.rollback)
    after = dut.mqtt.received(dut.topics.status_topic, since=last.index)
    rollback = next(filter(said_rollback, after), None)
    assert rollback is not None, "the device did not say it rolled back"
    assert http_ota.match(contract.rollback, rollback.text) == {"version": bad}
    online = next(filter(is_online(dut), after))
    assert rollback.index < online.index, "the device says it rolled back before it is online"
