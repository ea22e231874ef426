"""HTTP OTA into the twin, seen from outside: the status topic by mosquitto_sub, the requests
by the image server's log, the modem's power by LCUS frames."""

from __future__ import annotations

import re
import time

from hil.ota.http_server import ImageServer
from hil.protocol.image import build_image

IMAGE_SIZE = 20000


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
