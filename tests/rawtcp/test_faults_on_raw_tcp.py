"""The firmware bugs a raw-TCP device can have are caught on it too: MQTT 3.1 by the broker
protocol check, a firmware that does not subscribe again after recovering by the recovery
suite (its clean session left it no subscriptions), and through the proxy its own keepalive
that never misses a PINGRESP by the blackhole and a client id kept for good (taking the
session back from whoever holds it) by the takeover."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RIG = ROOT / "rigs" / "sim-raw-tcp.toml"
HIL = shutil.which("hil") or "hil"
CATCHES = {
    ("mqtt_v31", "no_resubscribe"): [
        "test_broker_protocol.py::test_device_connects_with_the_profiles_mqtt_version",
        "test_recovery.py::test_recovers_after_power_cut[medium]",
    ],
    ("no_keepalive_check",): [
        "test_network.py::test_blackhole_is_noticed_by_the_keepalive_and_recovered"
    ],
    ("takeover_loop",): ["test_network.py::test_session_taken_over_is_won_back_without_a_fight"],
}


@pytest.mark.slow
@pytest.mark.parametrize("faults", list(CATCHES), ids="+".join)
def test_firmware_bugs_fail_their_suites_on_raw_tcp(
    tmp_path: Path, faults: tuple[str, ...]
) -> None:
    caught = CATCHES[faults]
    rig = tmp_path / RIG.name
    listed = ", ".join(f'"{fault}"' for fault in faults)
    rig.write_text(RIG.read_text().replace("[sim]\n", f"[sim]\nfaults = [{listed}]\n", 1))
    junit = tmp_path / "junit.xml"
    subprocess.run(
        [HIL, "run", "--rig", str(rig), "-p", "no:cacheprovider", "--junitxml", str(junit),
         "--hil-artifacts", str(tmp_path / "artifacts"), "-q",
         *(str(ROOT / "test_suites" / node) for node in caught)],
        cwd=ROOT, env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    failed = {
        f"{case.get('classname', '').rpartition('.')[2]}.py::{case.get('name')}"
        for case in ET.parse(junit).iter("testcase")
        if case.find("failure") is not None
    }
    assert failed == set(caught)
