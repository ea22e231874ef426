"""The encrypted echo, checked against openssl, never against the harness's own cipher."""

from __future__ import annotations

import re

from tests.sim.rig import openssl_decrypt, openssl_encrypt


def test_echo_round_trip_checked_with_openssl(start_twin, mosquitto):
    rig = start_twin()
    mark = rig.status.mark()
    rig.command(openssl_encrypt("Test Message", rig.key, rig.iv))
    first, plain = rig.status.expect(lambda m: True, rig.timeout, mark)
    assert plain == "Test Message"
    _, reply = rig.status.expect(lambda m: True, rig.timeout, first + 1)
    assert openssl_decrypt(reply, rig.key, rig.iv) == b"ESP32_Test Message"
    rig.console.expect(r"^LCD: MQTT Msg: Test Message$", rig.timeout)
    rig.console.expect(r"^LED: ON$", rig.timeout)
    log = mosquitto.log_path.read_text()
    assert re.search(r"as ESP32_SIM7600_\d+ \(p2, c1, k60", log), "device did not use 3.1.1"


def test_bad_base64_is_refused_and_echo_still_works(start_twin):
    rig = start_twin()
    mark = rig.console.mark()
    rig.command("not base64 !!")
    rig.console.expect(r"^Decrypt failed$", rig.timeout, mark)
    smark = rig.status.mark()
    rig.command(openssl_encrypt("after", rig.key, rig.iv))
    rig.status.expect("after", rig.timeout, smark)


def test_empty_plaintext_is_echoed_as_an_empty_payload(start_twin):
    """An empty MQTT payload is legal: the device publishes it without AT+CMQTTPAYLOAD."""
    rig = start_twin()
    mark = rig.status.mark()
    rig.command(openssl_encrypt("", rig.key, rig.iv))
    first, plain = rig.status.expect(lambda m: True, rig.timeout, mark)
    assert plain == ""
    _, reply = rig.status.expect(lambda m: True, rig.timeout, first + 1)
    assert openssl_decrypt(reply, rig.key, rig.iv) == b"ESP32_"
    assert not any(m.startswith("STATUS:ONLINE") for m in rig.status.messages[mark:])
