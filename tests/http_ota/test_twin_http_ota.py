"""HTTP OTA into the twin, seen from outside: the status topic by mosquitto_sub, the requests
by the image server's log, the modem's and the board's power by LCUS frames."""

from __future__ import annotations

import re
import time

import serial

from hil.ota.http_server import ImageServer
from hil.power.lcus import encode_frame
from hil.protocol.image import build_image
from hil.sim.flash import SELFTEST_FAIL_SUFFIX

IMAGE_SIZE = 20000
BOARD_CHANNEL = 2  # the twin's whole-device supply (SimOptions.board_channel)


def test_a_download_the_modems_power_cut_goes_on_from_where_it_got(start_twin) -> None:
    rig = start_twin()
    image = build_image("2.0.0", IMAGE_SIZE, project="twin-http")
    with ImageServer(image) as server:
        mark = rig.status.mark()
        rig.firmware(f"OTA:URL:{server.url}")
        index, _ = rig.status.expect(r"OTA:HTTP:DOWNLOADING:8192/20000", rig.timeout, mark)
        rig.modem_power(False)
        time.sleep(0.3)
        rig.modem_power(True)
        power_back = time.time()
        back = rig.wait_online("1.0.0", index)  # recovered, still the old image
        _, resumed = rig.status.expect(r"OTA:HTTP:RESUMED:\d+", rig.timeout, back)
        at = int(resumed.rsplit(":", 1)[1])
        rig.wait_online("2.0.0", back)
    assert at >= 8192, "the device must keep the blocks it had before the power cut"
    after = [r for r in server.image_requests() if r.time >= power_back]
    assert after[0].range == f"bytes={at}-{at + 4095}", "it goes on from the byte it has"
    assert all(r.start >= at for r in after), "nothing it had is asked for again"
    starts = {r.start for r in server.image_requests() if r.complete}
    assert starts == set(range(0, IMAGE_SIZE, 4096)), "every block was served whole"


def test_an_image_the_server_does_not_have_fails_with_its_status(start_twin) -> None:
    rig = start_twin()
    image = build_image("2.0.0", 4096, project="twin-http")
    with ImageServer(image, image_path="/elsewhere.bin") as server:
        mark = rig.status.mark()
        rig.firmware(f"OTA:URL:{server.url}")
        rig.status.expect(r"OTA:HTTP:FAILED:http_404", rig.timeout, mark)
    index, _ = rig.console.expect(r"^OTA failed: http_404$", rig.timeout)
    assert not any(re.match(r"^rst:|^Rebooting", line) for line in rig.console.lines[index:])


def board_power(rig, on: bool) -> None:
    """Normally closed wiring, as the modem's: energizing the coil cuts the board's supply."""
    with serial.Serial(str(rig.ports.relay), 9600, timeout=1) as relay:
        relay.write(encode_frame(BOARD_CHANNEL, not on))
        relay.flush()


def test_a_rollback_is_reported_after_a_power_cycle_that_came_before_the_report(
    start_twin,
) -> None:
    rig = start_twin(console="uart-bridge")  # a port that keeps every line across resets
    image = build_image("2.0.0", IMAGE_SIZE, project="twin-http" + SELFTEST_FAIL_SUFFIX)
    with ImageServer(image) as server:
        mark = rig.status.mark()
        rig.firmware(f"OTA:URL:{server.url}")
        done, _ = rig.console.expect(r"^OTA Complete$", rig.timeout)
        # Its last AT command is behind it: without the modem the old app, back after the
        # rollback, can say nothing until the board's power has been cycled.
        rig.modem_power(False)
        index, _ = rig.console.expect(r"^OTA: self-test failed, rolling back$", rig.timeout, done)
        rig.console.expect(r"^Firmware 1\.0\.0 starting$", rig.timeout, index)
    quiet = rig.status.mark()
    assert not any("ROLLBACK" in m for m in rig.status.messages[mark:quiet]), "said too soon"
    board_power(rig, False)
    time.sleep(0.2)  # the power cut being tested: off, then back
    rig.modem_power(True)
    board_power(rig, True)
    back = rig.wait_online("1.0.0", quiet)
    said = rig.status.messages[mark:back]
    assert said.count("OTA:ROLLBACK:2.0.0") == 1, f"the rollback is said once first: {said}"
    assert "OTA:ROLLBACK:2.0.0" in rig.status.messages[quiet:back], "after the power cycle"

    board_power(rig, False)  # once reported, another cold boot does not say it again
    time.sleep(0.2)
    board_power(rig, True)
    again = rig.wait_online("1.0.0", back + 1)
    assert "OTA:ROLLBACK:2.0.0" not in rig.status.messages[back + 1 : again + 1]
