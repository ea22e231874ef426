"""HTTP OTA over HTTPS on the TLS rig, end to end: one `hil run` on a copy of rigs/sim-tls.toml,
whose session makes the CA the twin's firmware carries. The suite's good update is offered an
https:// URL and boots; an image server whose certificate another CA signed is refused by the
twin's modem at the handshake, so the firmware fails the update with the module's status
(715) before any request reaches the server, and keeps running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tls.conftest import needs_openssl_and_mosquitto

ROOT = Path(__file__).resolve().parents[2]
HIL = "import sys; from hil.cli import main; sys.exit(main())"
RUN_TIMEOUT_S = 300
GOOD_UPDATE = "test_http_ota.py::test_good_update_comes_online_as_the_new_version"

pytestmark = needs_openssl_and_mosquitto

# A test of the rig's own, beside the suite: the device offered a server it cannot verify.
IMPOSTOR_TEST = """
import pytest

from hil.broker.tls import BrokerPki
from hil.ota.http_server import ImageServer, tls_context
from hil.protocol import http_ota
from hil.protocol.image import build_image

pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]


async def test_an_image_server_another_ca_signed_is_refused(dut, tmp_path):
    contract = dut.profile.http_ota
    before = await dut.current_version()
    other = BrokerPki.create(tmp_path / "other-ca")
    tls = tls_context(str(other.server.cert), str(other.server.key))
    image = build_image("99.0.0-impostor", 8192, project="hil-impostor")
    with ImageServer.for_profile(image, contract, tls=tls) as server:
        text = http_ota.fill(contract.url, url=server.url)
        sent = await dut.mqtt.publish(dut.topics.firmware_topic, text, dut.topics.qos)
        ended = await dut.mqtt.expect(  # failed, or back online on the impostor's image
            dut.topics.status_topic,
            lambda r: http_ota.match(contract.failed, r.text) or r.text.startswith("STATUS:ON"),
            contract.download_s,
            since=sent.index,
        )
        assert server.url.startswith("https://")
        assert server.requests == [], "nothing may reach a server the device cannot verify"
    assert http_ota.match(contract.failed, ended.text) == {"reason": "version_http_715"}
    assert (await dut.echo("still here")).first.text == "still here"
    assert await dut.current_version() == before
"""


def test_http_ota_goes_over_https_and_refuses_a_server_it_cannot_verify(tmp_path: Path) -> None:
    rig = tmp_path / "sim-tls.toml"
    rig.write_text((ROOT / "rigs" / "sim-tls.toml").read_text())
    impostor = tmp_path / "test_impostor.py"
    impostor.write_text(IMPOSTOR_TEST)
    run = tmp_path / "run"
    command = [sys.executable, "-c", HIL, "run", "--rig", str(rig), "-p", "no:cacheprovider"]
    command += ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)]
    command += ["--hil-artifacts", str(run), "-q", str(ROOT / "test_suites" / GOOD_UPDATE)]
    command.append(str(impostor))
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    facts = json.loads((run / "run.json").read_text())
    assert facts["counts"]["passed"] == 2, facts["counts"]
    (good,) = run.glob("*test_good_update*")
    offers = [
        json.loads(line)["payload"]
        for line in (good / "mqtt.jsonl").read_text().splitlines()
        if json.loads(line)["topic"].endswith("firmware/update")
    ]
    assert offers and all(o.startswith("OTA:URL:https://127.0.0.1:") for o in offers), offers
    served = [json.loads(line) for line in (good / "http.jsonl").read_text().splitlines()]
    assert any(r["status"] == 206 for r in served), "the image came as ranges, over HTTPS"
