"""OTA over MQTT into the twin with real-format images."""

from __future__ import annotations

import time

from hil.protocol import ota
from hil.protocol.image import build_image

IMAGE_SIZE = 6000


def test_valid_image_reboots_into_new_version(start_twin):
    """A UART bridge keeps its port: the reboot is seen as the ROM's software-reset banner."""
    rig = start_twin(console="uart-bridge")
    image = build_image("2.0.0", size=IMAGE_SIZE)
    cmark = rig.console.mark()
    mark = rig.ota_push(image)
    rig.firmware(ota.END)
    total = ota.chunk_count(len(image))
    rig.status.expect(rf"OTA:PROGRESS:{total - 1}/{total}", rig.timeout, mark)
    rig.status.expect(ota.SUCCESS, rig.timeout, mark)
    index, _ = rig.console.expect(r"^OTA Complete$", rig.timeout, cmark)
    index, _ = rig.console.expect(r"^Rebooting\.\.\.$", rig.timeout, index)
    rig.console.expect(r"^rst:0xc \(RTC_SW_CPU_RST\)", rig.timeout, index)
    rig.console.expect(r"^Firmware 2\.0\.0 starting$", rig.timeout, index)
    rig.wait_online("2.0.0", mark)
    assert len(rig.console.ports_seen) == 1, "a UART bridge's port must stay across the reboot"


def test_native_usb_console_re_enumerates_and_loses_the_boot_banner(start_twin):
    """An ESP32-S3's own USB leaves the bus on reset: a new tty node, and what the chip printed
    before the host reopened it is gone. Only MQTT proves the new version."""
    rig = start_twin()
    image = build_image("2.0.0", size=IMAGE_SIZE)
    cmark = rig.console.mark()
    mark = rig.ota_push(image)
    rig.firmware(ota.END)
    rig.status.expect(ota.SUCCESS, rig.timeout, mark)
    rig.wait_online("2.0.0", mark)
    assert len(rig.console.ports_seen) >= 2, "console port was not re-created on reboot"
    after = rig.console.lines[cmark:]
    assert not any(line.startswith("rst:") for line in after), after


def test_gap_is_refused_with_request(start_twin):
    rig = start_twin()
    image = build_image("2.0.0", size=IMAGE_SIZE)
    mark = rig.ota_push(image, chunks=[0, 2])
    rig.status.expect(r"OTA:REQUEST:1", rig.timeout, mark)


def test_bad_image_fails_verify_and_old_firmware_keeps_running(start_twin):
    rig = start_twin()
    image = bytearray(build_image("2.0.0", size=IMAGE_SIZE))
    image[100] ^= 0xFF
    mark = rig.ota_push(bytes(image))
    rig.firmware(ota.END)
    rig.status.expect(r"OTA:ERROR:verify", rig.timeout, mark)
    rig.console.expect(r"^OTA failed: verify$", rig.timeout)


def test_selftest_failure_rolls_back(start_twin):
    rig = start_twin(console="uart-bridge")
    image = build_image("3.0.0", size=IMAGE_SIZE, project="hil-selftest-fail")
    mark = rig.ota_push(image)
    rig.firmware(ota.END)
    rig.status.expect(ota.SUCCESS, rig.timeout, mark)
    index, _ = rig.console.expect(r"^Firmware 3\.0\.0 starting$", rig.timeout)
    rig.console.expect(r"self-test failed, rolling back", rig.timeout, index)
    rig.console.expect(r"^Firmware 1\.0\.0 starting$", rig.timeout, index)
    rig.wait_online("1.0.0", mark)


def test_chunk_timeout(start_twin):
    rig = start_twin()
    image = build_image("2.0.0", size=IMAGE_SIZE)
    mark = rig.ota_push(image, chunks=[0])
    rig.status.expect(r"OTA:ERROR:timeout", rig.timeout, mark)


STREAM_RTT_MS = 400.0
STREAM_ANSWERS = 16
STREAM_MAX_ROUND_TRIPS = 8  # at least one per answer if each waited for its PUBACK; ~4 if not


def test_progress_does_not_wait_for_the_puback(start_twin):
    """PROGRESS goes out at the modem's OK; its +CMQTTPUB result is collected later.

    Chunk 0 and then copies of it, all sent at once: each copy is a duplicate, answered with
    its own repeat of the last PROGRESS (never folded into another). A firmware that waited
    for each publish's result before reading the next message would need a round trip per
    answer; streaming needs one round trip plus the chunks' UART time (about 70 ms each).
    """
    rig = start_twin(rtt_ms=STREAM_RTT_MS)
    image = build_image("2.0.0", size=IMAGE_SIZE)
    total = ota.chunk_count(len(image))
    first = ota.encode_chunk(0, ota.split_image(image, rig.profile.ota.chunk_data_size)[0])
    mark = rig.status.mark()
    rig.firmware(ota.begin(len(image)))
    mark, _ = rig.status.expect(rf"OTA:READY:{len(image)}", rig.timeout, mark)
    progress = f"OTA:PROGRESS:0/{total}"
    started = time.monotonic()
    rig.firmware(*[first] * STREAM_ANSWERS)
    index = mark
    for _ in range(STREAM_ANSWERS):
        index, _ = rig.status.expect(progress, rig.timeout, index + 1)
    round_trips = (time.monotonic() - started) / (STREAM_RTT_MS / 1000)
    assert round_trips < STREAM_MAX_ROUND_TRIPS, (
        f"{STREAM_ANSWERS} answers took {round_trips:.1f} round trips"
    )
