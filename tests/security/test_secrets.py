"""No secret in any log, artifact or report: real pytest runs with a password and private keys.

Each run uses `-l --log-level=DEBUG -rA --junitxml` and has a failing test, so tracebacks,
locals and captured logs all land in the output; then every file the run wrote and everything
it printed is searched for the password and for the private keys' contents.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.broker.tls import BrokerPki
from tests.core.conftest import PtyPort, needs_mosquitto

pytestmark = needs_mosquitto

PASSWORD = "Pw-5ecret-7f3a9c"
SIM_RIG = Path(__file__).parents[2] / "rigs" / "sim.toml"

SUITE = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

async def test_round_trip(mqtt, rig):
    await mqtt.publish(rig.profile.mqtt.status_topic, "STATUS:ONLINE:9.9.9")
    await mqtt.expect(rig.profile.mqtt.status_topic, "STATUS:ONLINE:9.9.9", timeout=10)

async def test_fails_showing_its_locals(mqtt, broker, rig):
    endpoint = mqtt.endpoint
    assert endpoint is None, f"{endpoint!r} {endpoint} {rig.broker.options}"
"""

TWIN_SUITE = (
    SUITE
    + """
async def test_the_twin_logged_in_with_the_password(dut, broker):
    await dut.current_version()
    assert any(c["username"] == "ESP32" for c in broker.connections())
"""
)


def run_and_collect(folder: Path, rig: Path, suite: str, env: dict[str, str]) -> str:
    """Run the suite; everything the run printed and wrote, as one text."""
    (folder / "test_inner.py").write_text(suite)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-l",
            "-rA",
            "-v",
            "--log-level=DEBUG",
            "--junitxml",
            "junit.xml",
            "--rig",
            str(rig),
            "--hil-artifacts",
            "art",
            "test_inner.py",
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    texts = [result.stdout, result.stderr]
    for path in [folder / "junit.xml", *(folder / "art").rglob("*")]:
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def outcome(report: str) -> str:
    return next(line for line in report.splitlines() if " in " in line and "passed" in line)


def key_body(path: Path) -> list[str]:
    """The base64 lines of a PEM private key: any one of them leaking is a leak."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HIL_TEST_BROKER_PW": PASSWORD, "HIL_LOCK_DIR": str(tmp_path / "locks")}


def test_virtual_rig_with_a_broker_password(tmp_path: Path, env: dict[str, str]) -> None:
    rig = tmp_path / "sim.toml"
    rig.write_text(
        SIM_RIG.read_text().replace(
            'driver = "auto"',
            'driver = "mosquitto"\nusername = "ESP32"\npassword_env = "HIL_TEST_BROKER_PW"',
        )
    )
    report = run_and_collect(tmp_path, rig, TWIN_SUITE, env)
    assert "2 passed" in outcome(report) and "1 failed" in outcome(report), report[-3000:]
    assert "HIL_TEST_BROKER_PW" in report  # the variable's name may be shown, never its value
    assert PASSWORD not in report


def test_mutual_tls_rig_with_key_files(tmp_path: Path, env: dict[str, str]) -> None:
    pki = BrokerPki.create(tmp_path / "pki", client=True)
    console = PtyPort(tmp_path / "console")
    rig = tmp_path / "rig.toml"
    rig.write_text(
        f'[rig]\nname = "tls-rig"\n[console]\ndriver = "serial"\nport = "{console.link}"\n'
        '[broker]\ndriver = "mosquitto"\ntls = true\nrequire_certificate = true\n'
        f'cafile = "{pki.ca}"\ncertfile = "{pki.server.cert}"\nkeyfile = "{pki.server.key}"\n'
        f'cert = "{pki.client.cert}"\nkey = "{pki.client.key}"\n'
        'username = "hil"\npassword_env = "HIL_TEST_BROKER_PW"\n'
    )
    try:
        report = run_and_collect(tmp_path, rig, SUITE, env)
    finally:
        console.close()
    assert "1 passed" in outcome(report) and "1 failed" in outcome(report), report[-3000:]
    assert "mqtts://hil@127.0.0.1" in report
    assert PASSWORD not in report
    for key in (pki.client.key, pki.server.key):
        assert not [line for line in key_body(key) if line in report], key
