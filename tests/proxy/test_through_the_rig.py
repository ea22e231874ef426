"""The proxy in a rig: the twin reaches the broker through it, the `proxy` fixture hands it to
suites with no fault left over, and every packet lands in the test's `proxy.jsonl`.

The proof of `[broker] proxy = true` on an external broker: every suite passes with the
device going through the proxy to a mosquitto the harness did not spawn, and mosquitto's own
log says the device connected with what the proxy recorded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.conftest import Mosquitto, needs_mosquitto, start_mosquitto

ROOT = Path(__file__).resolve().parents[2]
SUITES = ROOT / "test_suites"
pytestmark = needs_mosquitto

FIXTURE_SUITE = """
import pytest

pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]


async def test_a_blackhole_left_on_by_a_test(proxy) -> None:
    proxy.blackhole(True)
    proxy.delay(5.0)


async def test_is_cleared_for_the_next_and_a_drop_makes_the_device_reconnect(proxy, dut):
    assert not proxy.faults.blackholed and proxy.faults.delay_s == 0
    since = len(proxy.connects)
    assert proxy.drop() >= 1  # and those a modem's power cut left half-open, as on a real link
    assert proxy.connections == []
    again = await proxy.wait_connect(30, since=since)
    assert again.client_id.startswith(dut.topics.client_id_prefix)
    assert await dut.current_version()
"""


@pytest.fixture
def lab_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of the lab's: the rig reaches it as `driver = "external"`."""
    yield from start_mosquitto(tmp_path / "lab-broker")


def proxy_rig(tmp_path: Path, broker: str | None = None, faults: tuple[str, ...] = ()) -> Path:
    """A copy of the virtual rig (its flash file in the copy's folder) with the proxy on."""
    text = (ROOT / "rigs" / "sim.toml").read_text()
    table = broker or 'driver = "auto"'
    text = re.sub(r"\[broker\]\n[^\[]*", f"[broker]\n{table}\nproxy = true\n\n", text, count=1)
    if faults:
        listed = ", ".join(f'"{f}"' for f in faults)
        text = text.replace("[sim]\n", f"[sim]\nfaults = [{listed}]\n", 1)
    rig = tmp_path / "sim-proxy.toml"
    rig.write_text(text)
    return rig


def run(tmp_path: Path, rig: Path, *targets: str) -> tuple[dict[str, str], Path, str]:
    """pytest --rig in a fresh process: each test's outcome, the artifacts' root, the output."""
    junit, artifacts = tmp_path / "junit.xml", tmp_path / "artifacts"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "--rig", str(rig), "-p", "no:cacheprovider"),
            *("--hil-artifacts", str(artifacts), "--junitxml", str(junit), "-q", *targets),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "")] = kinds[0] if kinds else "passed"
    return outcomes, artifacts, result.stdout[-3000:]


def proxy_records(artifacts: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(artifacts.rglob("proxy.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_every_suite_passes_through_the_proxy_on_an_external_broker(
    tmp_path: Path, lab_broker: Mosquitto
) -> None:
    endpoint = lab_broker.endpoint
    external = f'driver = "external"\nhost = "{endpoint.host}"\nport = {endpoint.port}\ntls = false'
    suite = tmp_path / "test_proxy_fixture.py"
    suite.write_text(FIXTURE_SUITE)
    tls_only = ("--ignore", str(SUITES / "test_tls.py"))  # its checks need a broker over TLS
    outcomes, artifacts, output = run(
        tmp_path, proxy_rig(tmp_path, external), str(SUITES), str(suite), *tls_only
    )
    assert len(outcomes) >= 30, f"only {len(outcomes)} tests ran:\n{output}"
    bad = {name: kind for name, kind in outcomes.items() if kind != "passed"}
    assert not bad, f"not green through the proxy on an external broker: {bad}\n{output}"
    records = proxy_records(artifacts)
    assert any(r.get("fault") == "refused" for r in records), "test_network refuses CONNECTs"
    connects = [r for r in records if r.get("type") == "CONNECT" and not r.get("fault")]
    assert connects, "no CONNECT in any test's proxy.jsonl"
    assert all("password" not in r or r["password"] in (True, False) for r in connects)
    # mosquitto's log: each CONNECT the proxy passed on reached it as recorded (the suites'
    # own clients may use the device's id too: the session takeover does).
    logged = lab_broker.lines(r"New client connected from \S+ as (ESP32\S+) \(p(\d), c(\d), k(\d+)")
    assert len(logged) >= len(connects) >= 2  # bring-up's and the drop's reconnect at least
    assert {(r["client_id"], "2", "1", r["keepalive"]) for r in connects} <= {
        (m[1], m[2], m[3], int(m[4])) for m in logged
    }
    assert {(r["protocol_name"], r["level"]) for r in connects} == {("MQTT", 4)}


@pytest.mark.slow  # CI has it from test_suites_catch_faults.py, on rigs/sim.toml's proxy
def test_the_protocol_check_catches_mqtt_31_through_the_proxy(tmp_path: Path) -> None:
    node = "test_broker_protocol.py::test_device_connects_with_the_profiles_mqtt_version"
    outcomes, artifacts, output = run(
        tmp_path, proxy_rig(tmp_path, faults=("mqtt_v31",)), str(SUITES / node)
    )
    assert outcomes == {node.split("::")[1]: "failure"}, output
    assert "'MQIsdp', 3" in output
    connects = [r for r in proxy_records(artifacts) if r.get("type") == "CONNECT"]
    assert {(r["protocol_name"], r["level"]) for r in connects} == {("MQIsdp", 3)}
