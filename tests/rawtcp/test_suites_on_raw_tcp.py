"""Every suite passes on rigs/sim-raw-tcp.toml: a device whose firmware frames MQTT itself over
its modem's TCP commands, through the MQTT proxy, checked by the same suites and by the
broker's own log."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from hil.rig import load_rig

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
    # only the TLS suite may skip, saying what the rig lacks: the proxy's suites run
    skipped = [t for t in run["tests"] if t["outcome"] == "skipped"]
    unexplained = [
        t["nodeid"]
        for t in skipped
        if t["suite"] != "test_tls" or "needs tls" not in (t["message"] or "")
    ]
    assert not unexplained, unexplained
    ran = {test["suite"] for test in run["tests"] if test["outcome"] == "passed"}
    assert {"test_broker_protocol", "test_echo", "test_network", "test_ota", "test_recovery"} <= ran

    # mosquitto's own word on the device's CONNECTs: MQTT 3.1.1 (p2), clean session, keepalive
    # (the network suite's intruder takes the device's id with its own keepalive)
    log = (artifacts / "_rig" / "broker" / "mosquitto.log").read_text()
    logged = set(re.findall(r"New client connected from \S+ as (ESP32_SIM7600_\d+) \((.*?)\)", log))
    assert logged, "the device never connected"
    assert {flags.rpartition(",")[0] for _, flags in logged} == {"p2, c1"}
    assert "malformed" not in log.lower()

    # the proxy read every frame the firmware built, and each CONNECT it passed on reached
    # mosquitto as it recorded it
    records = [
        json.loads(line)
        for path in sorted(artifacts.glob("*/proxy.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert not [r for r in records if r.get("event") == "error"]
    connects = [r for r in records if r.get("type") == "CONNECT"]
    keepalive = load_rig(rig).profile.mqtt.keepalive_s
    assert {(r["protocol_name"], r["level"], r["keepalive"]) for r in connects} == {
        ("MQTT", 4, keepalive)
    }
    passed_on = {(r["client_id"], f"p2, c1, k{keepalive}") for r in connects if "fault" not in r}
    assert passed_on and passed_on <= logged, passed_on - logged
