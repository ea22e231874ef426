"""`hil accept` for real on the virtual rig: each repetition a `hil run` of one fast echo test
with a firmware image written by esptool, the record checked against `esptool image-info`,
by `hil accept verify` and by openssl; a firmware fault gives a signed
record that did not pass; Ctrl-C mid-run unwinds the run (its run.json says interrupted, the
rig is free again) and leaves no record."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from hil.lock import RigLock
from tests.accept.conftest import KeyPair, openssl
from tests.core.conftest import needs_mosquitto
from tests.waiting import until

pytestmark = [pytest.mark.slow, needs_mosquitto]

SIM_RIG = Path(__file__).resolve().parents[2] / "rigs" / "sim.toml"
HIL = "import sys; from hil.cli import main; sys.exit(main())"
ECHO = "test_echo_answers_plaintext_then_prefixed_ciphertext and seed_test_message"
ECHO_NODEID = (
    "test_suites/test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext"
    "[seed_test_message]"
)
RUN_S = 90.0  # two runs with bring-up each, on a slow CI runner
WAITS = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

async def test_waits(dut, console):
    await dut.echo("started")
    await console.expect("a line the device never prints", 600)
"""


def rig_copy(folder: Path, faults: list[str] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = SIM_RIG.read_text()
    if faults:
        text = text.replace("[sim]\n", f"[sim]\nfaults = {json.dumps(list(faults))}\n", 1)
    path = folder / "sim.toml"
    path.write_text(text)
    return path


def hil(*args: str | Path, **options) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.Popen(
        [sys.executable, "-c", HIL, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


@pytest.fixture(autouse=True)
def own_locks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))  # apart from other runs


def gone(processes: list[psutil.Process]) -> bool:
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def accept(rig: Path, keys: KeyPair, out: Path, *args: str) -> tuple[int, str, str]:
    process = hil(
        "accept",
        "--rig",
        rig,
        "--key",
        keys.private,
        "--out",
        out,
        *args,
        "--",
        "-p",
        "no:cacheprovider",
        "-q",
        "-k",
        ECHO,
    )
    stdout, stderr = process.communicate(timeout=RUN_S)
    return process.returncode, stdout, stderr


def verify(record: Path, keys: KeyPair) -> subprocess.CompletedProcess[str]:
    process = hil("accept", "verify", record, "--key", keys.public)
    stdout, stderr = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def esptool_image_info(image: Path) -> dict[str, str]:
    """`esptool image-info`'s fields, the independent reading of what an image is."""
    shown = subprocess.run(
        [sys.executable, "-m", "esptool", "--chip", "esp32s3", "image-info", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = dict(line.split(": ", 1) for line in shown.splitlines() if ": " in line)
    return {
        "sha256": fields["Validation hash"].split()[0],
        "version": fields["App version"],
        "project": fields["Project name"],
        "idf_version": fields["ESP-IDF"],
    }


def test_two_runs_give_a_record_verify_and_openssl_accept(keys: KeyPair, tmp_path: Path) -> None:
    image = tmp_path / "echo-fw.bin"
    made = hil(
        "image", "make", "--version", "1.2.0", "--project", "echo-fw", "--size", "65536", image
    ).communicate(timeout=30)
    assert image.is_file(), made
    out = tmp_path / "accept"

    status, stdout, stderr = accept(
        rig_copy(tmp_path / "rig"), keys, out, "--firmware", str(image), "--repeat", "2"
    )

    assert status == 0, stdout + stderr
    assert "this is not an acceptance of the full suites" in stderr
    assert "no --firmware" not in stderr
    record = json.loads((out / "acceptance.json").read_text())
    assert record["passed"] is True and len(record["runs"]) == 2
    info = esptool_image_info(image)
    assert {name: record["firmware"][name] for name in info} == info
    for run in record["runs"]:
        assert run["outcome"] == "passed" and run["exit_status"] == 0
        assert run["firmware"]["sha256"] == info["sha256"] and run["firmware"]["method"] == "serial"
        assert [test["nodeid"] for test in run["tests"]] == [ECHO_NODEID]
        (latency,) = run["tests"][0]["measurements"]
        assert latency["name"] == "echo_round_trip" and latency["passed"] is True
    assert record["selection"]["pytest_args"][-2:] == ["-k", ECHO]

    checked = verify(out / "acceptance.json", keys)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"valid: firmware 1.2.0 sha256 {info['sha256'][:16]}… on rig")
    assert "passed 2/2 runs of a selection of the suites" in checked.stdout

    canonical = {k: v for k, v in record.items() if k != "signature"}
    (tmp_path / "canonical.bin").write_bytes(
        json.dumps(
            canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    )
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(record["signature"]["value"]))
    by_openssl = openssl(
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        keys.public,
        "-rawin",
        "-in",
        tmp_path / "canonical.bin",
        "-sigfile",
        tmp_path / "sig.bin",
    )
    assert "Signature Verified Successfully" in by_openssl.stdout, by_openssl.stderr

    text = (out / "acceptance.json").read_text()
    (tmp_path / "edited.json").write_text(text.replace('"passed": true', '"passed": false', 1))
    edited = verify(tmp_path / "edited.json", keys)
    assert edited.returncode == 1 and "signature does not match" in edited.stderr


def test_a_firmware_fault_gives_a_signed_record_that_did_not_pass(
    keys: KeyPair, tmp_path: Path
) -> None:
    out = tmp_path / "accept"
    rig = rig_copy(tmp_path / "rig", faults=["echo_no_prefix"])

    status, stdout, stderr = accept(rig, keys, out)

    assert status == 1, stdout + stderr
    assert "hil accept: NOT accepted" in stdout and "run 1 failed" in stdout
    record = json.loads((out / "acceptance.json").read_text())
    assert record["passed"] is False and record["reasons"][0].startswith("run 1 failed")
    (test,) = record["runs"][0]["tests"]
    assert test["outcome"] == "failed" and "prefixed plaintext" in test["message"]
    checked = verify(out / "acceptance.json", keys)
    assert checked.returncode == 1
    assert checked.stdout.startswith("valid signature, NOT accepted:")


def test_ctrl_c_mid_run_stops_it_the_orderly_way_and_writes_no_record(
    keys: KeyPair, tmp_path: Path
) -> None:
    rig = rig_copy(tmp_path / "rig")
    suite = tmp_path / "suite" / "test_waits.py"
    suite.parent.mkdir()
    suite.write_text(WAITS)
    out = tmp_path / "accept"
    process = hil(
        "accept",
        "--rig",
        rig,
        "--key",
        keys.private,
        "--out",
        out,
        "--repeat",
        "2",
        "--",
        "-p",
        "no:cacheprovider",
        "-q",
        suite,
    )
    try:
        until(
            lambda: (
                process.poll() is not None
                or any(
                    '"started"' in log.read_text(errors="replace")
                    for log in out.glob("run-1/*test_waits*/mqtt.jsonl")
                )
            ),
            60,
            "the test of run 1 under way",
        )
        assert process.poll() is None, process.communicate()
        spawned = psutil.Process(process.pid).children(recursive=True)

        process.send_signal(signal.SIGINT)  # only hil accept: the run is in its own group
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 128 + signal.SIGINT, stdout + stderr
    assert "hil accept: interrupted by SIGINT; no record written" in stderr
    assert not (out / "acceptance.json").exists() and not (out / "run-2").exists()
    until(lambda: gone(spawned), 10, "hil run, its broker and twin ending")
    assert "KeyboardInterrupt" in stdout  # pytest's own report of the SIGINT it was sent
    assert json.loads((out / "run-1" / "run.json").read_text())["outcome"] == "interrupted"
    with RigLock(rig):  # released
        pass
