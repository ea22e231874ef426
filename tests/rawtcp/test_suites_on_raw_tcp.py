"""Every suite passes on rigs/sim-raw-tcp.toml: a device whose firmware frames MQTT itself over
its modem's TCP commands, checked by the same suites and by the broker's own log."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RIG = ROOT / "rigs" / "sim-raw-tcp.toml"
RUN_TIMEOUT_S = 600
HIL = shutil.which("hil") or "hil"  # the console script, as a user runs it


def test_every_suite_passes_on_the_raw_tcp_rig(tmp_path: Path) -> None:
    rig = tmp_path / RIG.name  # its flash file then lives in tmp_path, not the repository
    rig.write_text(RIG.read_text())
    assert 'transport = "raw-tcp"' in rig.read_text()
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    result = subprocess.run(
        [HIL, "run", "--rig", str(rig), "-p", "no:cacheprovider",
         "--hil-artifacts", str(artifacts), "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    run = json.loads((artifacts / "run.json").read_text())
    assert run["outcome"] == "passed"
    assert run["rig"]["name"] == "virtual-raw-tcp"
    counts = run["counts"]
    assert counts["failed"] == counts["error"] == 0, counts
    assert counts["passed"] >= 30, counts
    # only suites for what this rig has not (a proxy, TLS) may skip, and say so
    skipped = [t for t in run["tests"] if t["outcome"] == "skipped"]
    unexplained = [t["nodeid"] for t in skipped if "lacks it" not in (t["message"] or "")]
    assert not unexplained, unexplained
    suites = {test["suite"] for test in run["tests"]}
    assert {"test_broker_protocol", "test_echo", "test_ota", "test_recovery"} <= suites

    # mosquitto's own word on the device's CONNECTs: MQTT 3.1.1 (p2), clean session, keepalive
    log = (artifacts / "_rig" / "broker" / "mosquitto.log").read_text()
    device = re.findall(r"New client connected from \S+ as ESP32_SIM7600_\d+ \((.*?)\)", log)
    assert device, "the device never connected"
    assert set(device) == {"p2, c1, k60"}
    assert "malformed" not in log.lower()
