"""Each switchable fault shows, seen from outside as a suite would see it."""

from __future__ import annotations

import re

from hil.protocol import ota
from hil.protocol.image import build_image
from tests.sim.rig import openssl_decrypt, openssl_encrypt
from tests.sim.test_recovery import cut_power

IMAGE_SIZE = 3000
ABSENCE_S = 2.0  # how long an answer that must not come is waited for


def echo_reply(rig, text: str) -> str:
    mark = rig.status.mark()
    rig.command(openssl_encrypt(text, rig.key, rig.iv))
    first, _ = rig.status.expect(text, rig.timeout, mark)
    return rig.status.expect(lambda m: True, rig.timeout, first + 1)[1]


def test_echo_no_prefix(start_twin):
    rig = start_twin(["echo_no_prefix"])
    assert openssl_decrypt(echo_reply(rig, "hello"), rig.key, rig.iv) == b"hello"


def test_echo_wrong_iv(start_twin):
    rig = start_twin(["echo_wrong_iv"])
    assert openssl_decrypt(echo_reply(rig, "hello"), rig.key, rig.iv) != b"ESP32_hello"


def test_ota_accept_gaps(start_twin):
    rig = start_twin(["ota_accept_gaps"])
    mark = rig.ota_push(build_image("2.0.0", size=IMAGE_SIZE), chunks=[0, 2])
    total = ota.chunk_count(IMAGE_SIZE)
    rig.status.expect(rf"OTA:PROGRESS:2/{total}", rig.timeout, mark)


def test_ota_no_request(start_twin):
    rig = start_twin(["ota_no_request"])
    mark = rig.ota_push(build_image("2.0.0", size=IMAGE_SIZE), chunks=[0, 2, 0])
    total = ota.chunk_count(IMAGE_SIZE)
    first, _ = rig.status.expect(rf"OTA:PROGRESS:0/{total}", rig.timeout, mark)
    rig.status.expect(rf"OTA:PROGRESS:0/{total}", rig.timeout, first + 1)  # the duplicate's
    assert not any(m.startswith("OTA:REQUEST") for m in rig.status.messages[mark:])


def test_ota_skip_verify(start_twin):
    rig = start_twin(["ota_skip_verify"], console="uart-bridge")
    image = bytearray(build_image("2.0.0", size=IMAGE_SIZE))
    image[100] ^= 0xFF
    mark = rig.ota_push(bytes(image))
    rig.firmware(ota.END)
    rig.status.expect(ota.SUCCESS, rig.timeout, mark)
    rig.console.expect(r"not bootable", rig.timeout)
    rig.wait_online("1.0.0", mark)


def test_no_recovery(start_twin):
    rig = start_twin(["no_recovery"])
    mark = cut_power(rig, seconds=0.5)
    rig.console.expect(r"-> STATE_RECOVER_NETWORK$", rig.timeout, mark)
    try:
        rig.console.expect(r"-> STATE_RECOVER_GPRS$", ABSENCE_S, mark)
    except AssertionError:
        return
    raise AssertionError("firmware recovered although no_recovery is on")


def test_no_resubscribe(start_twin):
    rig = start_twin(["no_resubscribe"])
    smark = rig.status.mark()
    mark = cut_power(rig, seconds=0.5)
    rig.console.expect(r"^State: STATE_RECOVER_MQTT -> STATE_RUNNING$", rig.timeout, mark)
    rig.wait_online("1.0.0", smark)
    emark = rig.status.mark()
    rig.command(openssl_encrypt("lost", rig.key, rig.iv))
    try:
        rig.status.expect("lost", ABSENCE_S, emark)
    except AssertionError:
        return
    raise AssertionError("echo answered although the device did not resubscribe")


def test_mqtt_v31(start_twin, mosquitto):
    rig = start_twin(["mqtt_v31"])
    log = mosquitto.log_path.read_text()
    ids = re.findall(r"as (ESP32_SIM7600_\d+) \(p1, c1, k60", log)
    assert ids, "device did not connect with MQTT 3.1 (p1)"
    assert rig.ports.broker


def test_crash_on_bad_base64(start_twin):
    rig = start_twin(["crash_on_bad_base64"], console="uart-bridge")
    mark = rig.console.mark()
    rig.command("not base64 !!")
    index, _ = rig.console.expect(r"^Guru Meditation Error: Core  0 panic'ed", rig.timeout, mark)
    rig.console.expect(r"^Backtrace: 0x[0-9a-f]+:0x[0-9a-f]+", rig.timeout, index)
    rig.console.expect(r"^rst:0xc \(RTC_SW_CPU_RST\)", rig.timeout, index)
