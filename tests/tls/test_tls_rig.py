"""Every suite over mutual TLS: one `hil run` on a copy of rigs/sim-tls.toml, whose mosquitto
listens TLS-only and wants a client certificate, so the twin's firmware is online only if its
modem verified the broker and presented the device's certificate. The run's output and
artifacts hold no private key (they stay in the session's private folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tls.conftest import needs_openssl_and_mosquitto

ROOT = Path(__file__).resolve().parents[2]
HIL = "import sys; from hil.cli import main; sys.exit(main())"
RUN_TIMEOUT_S = 400  # ~80 s on an idle machine; two cores shared by many runs

pytestmark = needs_openssl_and_mosquitto


def test_every_suite_passes_over_mutual_tls(tmp_path: Path) -> None:
    rig = tmp_path / "sim-tls.toml"
    rig.write_text((ROOT / "rigs" / "sim-tls.toml").read_text())
    run = tmp_path / "run"
    command = [sys.executable, "-c", HIL, "run", "--rig", str(rig), "-p", "no:cacheprovider"]
    command += ["--hil-artifacts", str(run), "-q", str(ROOT / "test_suites")]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    facts = json.loads((run / "run.json").read_text())
    assert facts["outcome"] == "passed" and facts["counts"]["failed"] == 0, facts["counts"]
    assert facts["counts"]["passed"] >= 40, facts["counts"]
    conf = (run / "_rig" / "broker" / "mosquitto.conf").read_text().splitlines()
    assert "require_certificate true" in conf and any(c.startswith("cafile ") for c in conf)
    log = (run / "_rig" / "broker" / "mosquitto.log").read_text()
    assert "as ESP32_SIM7600_" in log  # the device, online through the TLS-only listener
    written = [p for p in run.rglob("*") if p.is_file() and p.suffix != ".sqlite"]
    for text in [output, *(p.read_text(errors="replace") for p in written)]:
        assert "PRIVATE KEY" not in text
