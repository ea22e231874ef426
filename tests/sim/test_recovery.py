"""Modem power cut through the emulated LCUS relay: detection, recovery path, back online."""

from __future__ import annotations

import time

from tests.sim.rig import openssl_encrypt

CUT_S = 1.0


def cut_power(rig, seconds: float = CUT_S) -> int:
    """Cut the modem's supply for `seconds` (the only deliberate sleep: it is the stimulus)."""
    mark = rig.console.mark()
    rig.modem_power(False)
    rig.console.expect(r"^Network lost$", rig.timeout, mark)
    time.sleep(seconds)
    rig.modem_power(True)
    return mark


def test_power_cut_recovers_in_order(start_twin):
    rig = start_twin()
    smark = rig.status.mark()
    mark = cut_power(rig)
    index = mark
    path = rig.profile.firmware.recovery_path
    for src, dst in zip(["STATE_RUNNING", *path], path, strict=False):
        index, _ = rig.console.expect(rf"^State: {src} -> {dst}$", rig.timeout, index)
    rig.wait_online("1.0.0", smark)
    emark = rig.status.mark()
    rig.command(openssl_encrypt("back", rig.key, rig.iv))
    rig.status.expect("back", rig.timeout, emark)


def test_long_power_cut_still_recovers(start_twin):
    rig = start_twin()
    smark = rig.status.mark()
    mark = cut_power(rig, seconds=3.0)  # longer than the retry budget: ERROR, then retries
    rig.console.expect(r"^State: STATE_RECOVER_NETWORK -> STATE_ERROR$", rig.timeout, mark)
    rig.console.expect(r"^State: STATE_SUBSCRIBE_MQTT -> STATE_RUNNING$", rig.timeout, mark)
    rig.wait_online("1.0.0", smark)


DETECT_S = 3.0  # the firmware's longest wait for a network result is under 2 s at TIME_SCALE
RTT_MS = 400.0  # +CMQTTPUB reaches the device this long after the broker has the message


def test_cut_while_waiting_for_publish_result_is_detected(start_twin):
    """The power goes after the broker has a message but before +CMQTTPUB is back."""
    rig = start_twin(rtt_ms=RTT_MS)
    smark = rig.status.mark()
    rig.command(openssl_encrypt("in flight", rig.key, rig.iv))
    rig.status.expect("in flight", rig.timeout, smark)
    mark = rig.console.mark()
    rig.modem_power(False)
    rig.console.expect(r"^Network lost$", DETECT_S, mark)
    rig.modem_power(True)
    omark = rig.status.mark()
    rig.wait_online("1.0.0", omark)
    rig.command(openssl_encrypt("after", rig.key, rig.iv))
    rig.status.expect("after", rig.timeout, omark)
