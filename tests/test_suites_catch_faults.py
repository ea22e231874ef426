"""The HIL suites against the twin: all pass on good firmware, and each named firmware bug
makes the suite that exists to catch it fail. A suite that stays green under its fault is
not testing what it claims to.
"""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "test_suites"

# fault -> the suite tests that must fail when the twin's firmware has it
CATCHES = {
    "echo_no_prefix": [
        "test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext[seed_test_message]"
    ],
    "echo_wrong_iv": [
        "test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext[16_bytes]"
    ],
    "crash_on_bad_base64": [
        "test_echo.py::test_undecryptable_command_gets_no_echo_and_device_keeps_working[bad_base64]"
    ],
    "ota_accept_gaps": ["test_ota.py::test_ota_delivers_the_image_despite[drop_first]"],
    "ota_skip_verify": ["test_ota.py::test_corrupted_byte_is_refused_at_verify"],
    "ota_no_request": ["test_ota.py::test_ota_delivers_the_image_despite[drop_middle]"],
    "no_recovery": ["test_recovery.py::test_recovers_after_power_cut[short]"],
    "no_resubscribe": ["test_recovery.py::test_recovers_after_power_cut[medium]"],
    "no_keepalive_check": [
        "test_network.py::test_blackhole_is_noticed_by_the_keepalive_and_recovered"
    ],
    "no_reconnect_after_refusal": ["test_network.py::test_connect_refused_twice_then_accepted"],
    "takeover_loop": ["test_network.py::test_session_taken_over_is_won_back_without_a_fight"],
    "mqtt_v31": ["test_broker_protocol.py::test_device_connects_with_the_profiles_mqtt_version"],
    "http_no_version_check": ["test_http_ota.py::test_a_version_not_newer_is_refused_naming_both"],
    "http_no_verify": [
        "test_http_ota.py::test_a_corrupted_download_is_refused_and_the_old_version_runs"
    ],
    "http_no_resume": ["test_http_ota.py::test_a_cut_download_resumes_from_the_byte_it_had"],
    "http_no_rollback": ["test_http_ota.py::test_an_image_failing_its_self_test_is_rolled_back"],
    "no_sni": ["test_tls.py::test_device_names_the_broker_in_sni"],
    "tls_no_verify": ["test_tls.py::test_device_refuses_a_broker_it_cannot_verify"],
}
# fault -> the rig whose twin can show it, when rigs/sim.toml cannot (TLS through the proxy)
RIGS = {"no_sni": "sim-tls.toml", "tls_no_verify": "sim-tls.toml"}


def rig_with_faults(tmp_path: Path, faults: list[str], base: str = "sim.toml") -> Path:
    text = (ROOT / "rigs" / base).read_text()
    listed = ", ".join(f'"{f}"' for f in faults)
    rig = tmp_path / "sim-faulty.toml"
    rig.write_text(text.replace("[sim]\n", f"[sim]\nfaults = [{listed}]\n", 1))
    return rig


def run_suites(tmp_path: Path, rig: Path, targets: list[str]) -> dict[str, str]:
    """Run the suites in a fresh pytest; return each test's outcome from the JUnit report."""
    junit = tmp_path / "junit.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--rig",
            str(rig),
            "-p",
            "no:cacheprovider",
            "--hil-artifacts",
            str(tmp_path / "artifacts"),
            "--junitxml",
            str(junit),
            "-q",
            *targets,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        name = f"{Path(case.get('classname', '').replace('.', '/')).name}.py::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[name] = kinds[0] if kinds else "passed"
    return outcomes


@pytest.mark.repo_rig  # the repository's own rigs/sim.toml, as the quick start runs it
def test_all_suites_pass_on_good_firmware(tmp_path: Path) -> None:
    # test_tls.py needs TLS through the proxy: tests/tls/test_tls_rig.py runs it, on sim-tls.toml
    tls_only = ["--ignore", str(SUITES / "test_tls.py")]
    outcomes = run_suites(tmp_path, ROOT / "rigs" / "sim.toml", [str(SUITES), *tls_only])
    assert len(outcomes) >= 30, f"only {len(outcomes)} suite tests ran"
    bad = {name: kind for name, kind in outcomes.items() if kind != "passed"}
    assert not bad, f"suites not green on the fault-free twin: {bad}"


def needs_broker_log(fault: str):
    """mqtt_v31 is caught by the broker's log, which the spawned mosquitto keeps."""
    if fault == "mqtt_v31" and not shutil.which(
        "mosquitto", path=f"{os.environ['PATH']}:/usr/sbin"
    ):
        return pytest.param(
            fault, marks=pytest.mark.skip("needs mosquitto (apt-get install mosquitto)")
        )
    return fault


@pytest.mark.parametrize("fault", [needs_broker_log(f) for f in CATCHES])
def test_suite_fails_on_the_fault_it_exists_to_catch(tmp_path: Path, fault: str) -> None:
    targets = [str(SUITES / node) for node in CATCHES[fault]]
    rig = rig_with_faults(tmp_path, [fault], RIGS.get(fault, "sim.toml"))
    outcomes = run_suites(tmp_path, rig, targets)
    for node in CATCHES[fault]:
        assert outcomes.get(node) == "failure", (
            f"with fault {fault}, {node} should fail (device at fault) but was "
            f"{outcomes.get(node, 'not run')}"
        )
