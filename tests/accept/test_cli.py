"""`hil accept` and `hil accept verify` from the command line: the record signed and checked,
its exit statuses, and every refusal before a single run starts.

`hil run` is stood in for by a child that copies a prepared run folder (in the run.json
contract's format) into place, so these cases take a second; tests/accept/test_end_to_end.py
runs the real suites.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil.cli import main
from tests.accept.conftest import (
    FIRMWARE_SHA,
    PASSPHRASE,
    PASSPHRASE_ENV,
    KeyPair,
    case,
    passing_tests,
    write_run,
)

SIM_RIG = Path(__file__).resolve().parents[2] / "rigs" / "sim.toml"
STAND_IN = """
import json, os, shutil, sys
templates, artifacts = sys.argv[1:3]
template = os.path.join(templates, os.path.basename(artifacts))
shutil.copytree(template, artifacts)
with open(os.path.join(artifacts, "child.json"), "w") as f:
    json.dump({"argv": sys.argv[3:], "env": sorted(os.environ)}, f)
status = os.path.join(template, "exit_status")
sys.exit(int(open(status).read()) if os.path.exists(status) else 0)
"""


def sha256sum(path: Path) -> str:
    return subprocess.run(
        ["sha256sum", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]


def openssl_key_id(public: Path) -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(public), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    raw = der[-32:]
    digest = subprocess.run(["sha256sum"], input=raw, capture_output=True, check=True).stdout
    return digest.decode().split()[0][:16]


@pytest.fixture
def rig(tmp_path: Path) -> Path:
    path = tmp_path / "rig" / "sim.toml"
    path.parent.mkdir()
    path.write_text(SIM_RIG.read_text())
    return path


@pytest.fixture
def templates(tmp_path: Path, monkeypatch) -> Path:
    """Where the stand-in `hil run` finds run-<k>; it replaces the real one for the test."""
    folder = tmp_path / "templates"
    folder.mkdir()

    def command(rig: Path, artifacts: Path, firmware: Path | None, pytest_args) -> list[str]:
        extra = ["--rig", str(rig), *(["--firmware", str(firmware)] if firmware else [])]
        return [sys.executable, "-c", STAND_IN, str(folder), str(artifacts), *extra, *pytest_args]

    monkeypatch.setattr("hil.cli.accept.hil_run_command", command)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    return folder


def test_accept_signs_a_record_of_every_run_that_verify_accepts(
    rig: Path, templates: Path, encrypted_keys: KeyPair, tmp_path: Path, monkeypatch, capsys
) -> None:
    for n in (1, 2, 3):
        write_run(templates / f"run-{n}", passing_tests(), rig_sha=sha256sum(rig))
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    out = tmp_path / "out"
    firmware = tmp_path / "echo-fw.bin"
    firmware.write_bytes(b"\xe9" + bytes(63))

    status = main(
        [
            "accept",
            "--rig",
            str(rig),
            "--key",
            str(encrypted_keys.private),
            "--key-pass-env",
            PASSPHRASE_ENV,
            "--firmware",
            str(firmware),
            "--repeat",
            "3",
            "--out",
            str(out),
        ]
    )

    said = capsys.readouterr()
    assert status == 0, said.err
    key = openssl_key_id(encrypted_keys.public)
    assert f"hil accept: accepted: firmware 1.2.0 sha256 {FIRMWARE_SHA[:16]}… on rig virtual " in (
        said.out
    )
    assert f"passed 3/3 runs of the full suites, signed by key {key}" in said.out
    assert "warning" not in said.err
    assert PASSPHRASE not in said.out + said.err
    child = json.loads((out / "run-1" / "child.json").read_text())
    assert child["argv"] == ["--rig", str(rig.resolve()), "--firmware", str(firmware.resolve())]
    assert PASSPHRASE_ENV not in child["env"]  # the runs never see the passphrase
    record = json.loads((out / "acceptance.json").read_text())
    assert record["rig"] == {"name": "virtual", "sha256": sha256sum(rig), "kind": "virtual"}
    assert len(record["runs"]) == 3 and record["passed"] is True

    assert (
        main(
            ["accept", "verify", str(out / "acceptance.json"), "--key", str(encrypted_keys.public)]
        )
        == 0
    )
    line = capsys.readouterr().out
    assert line.startswith("valid: firmware 1.2.0 sha256 5d1f0c2e5d1f0c2e… on rig virtual")
    assert line.rstrip().endswith(f"passed 3/3 runs of the full suites, signed by key {key}")


@pytest.fixture
def failed_record(rig: Path, templates: Path, keys: KeyPair, tmp_path: Path, capsys) -> Path:
    """`hil accept --repeat 2 -- -k echo` whose second run failed: exit 1, record signed."""
    failing = passing_tests()
    failing[0] = case(failing[0]["nodeid"], "failed")
    write_run(templates / "run-1", passing_tests(), rig_sha=sha256sum(rig))
    write_run(templates / "run-2", failing, rig_sha=sha256sum(rig))
    (templates / "run-2" / "exit_status").write_text("1")
    out = tmp_path / "failed"

    status = main(
        [
            "accept",
            "--rig",
            str(rig),
            "--key",
            str(keys.private),
            "--repeat",
            "2",
            "--out",
            str(out),
            "--",
            "-k",
            "echo",
        ]
    )

    said = capsys.readouterr()
    assert status == 1, said.err
    assert "hil accept: run 2 of 2 failed (3 passed, 1 failed, 0 error, 0 skipped)" in said.out
    assert "NOT accepted" in said.out and "run 2 failed" in said.out
    assert "-k echo: this is not an acceptance of the full suites" in said.err
    assert "no --firmware" in said.err
    return out / "acceptance.json"


def test_a_failed_run_still_gives_a_signed_record_that_verify_rejects(
    failed_record: Path, keys: KeyPair, capsys
) -> None:
    record = json.loads(failed_record.read_text())
    assert record["passed"] is False
    assert record["selection"] == {
        "full_suites": False,
        "pytest_args": ["-k", "echo"],
        "pytest_addopts": None,
    }

    assert main(["accept", "verify", str(failed_record), "--key", str(keys.public)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("valid signature, NOT accepted: firmware 1.2.0")
    assert "passed 1/2 runs of a selection of the suites" in out
    assert "(run 2 failed (3 passed, 1 failed, 0 error, 0 skipped))" in out


def test_a_tampered_record_fails_verification(
    failed_record: Path, keys: KeyPair, other_keys: KeyPair, tmp_path: Path, capsys
) -> None:
    text = failed_record.read_text()
    assert text.count('"passed": false') == 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(text.replace('"passed": false', '"passed": true'))
    verify = ["accept", "verify", str(tampered), "--key", str(keys.public)]

    assert main(verify) == 1
    assert capsys.readouterr().err == (
        f"hil accept verify: {tampered}: signature does not match: the record was changed or "
        "signed by another key\n"
    )

    assert main(["accept", "verify", str(failed_record), "--key", str(other_keys.public)]) == 1
    err = capsys.readouterr().err
    assert "signature does not match" in err and openssl_key_id(other_keys.public) in err

    record = json.loads(text)
    del record["signature"]
    tampered.write_text(json.dumps(record))
    assert main(verify) == 1
    assert "has no signature" in capsys.readouterr().err

    tampered.write_text(text[: len(text) // 2])
    assert main(verify) == 1
    assert "is not valid JSON" in capsys.readouterr().err


def test_verify_usage_errors_exit_2(failed_record: Path, keys: KeyPair, tmp_path: Path, capsys):
    missing = tmp_path / "nowhere.json"
    assert main(["accept", "verify", str(missing), "--key", str(keys.public)]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err

    assert main(["accept", "verify", str(failed_record), "--key", str(keys.private)]) == 2
    assert "is a private key; check records with its public key" in capsys.readouterr().err

    assert main(["accept", "verify", str(failed_record)]) == 2
    assert "--key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["--key", "{tmp}/missing.pem"], "cannot read the private key {tmp}/missing.pem"),
        (["--key", "{encrypted}"], "is encrypted: name the environment variable"),
        (
            ["--key", "{encrypted}", "--key-pass-env", "HIL_TEST_UNSET_VAR"],
            "HIL_TEST_UNSET_VAR is not set",
        ),
        (["--key", "{key}", "--rig", "{tmp}/no-rig.toml"], "no-rig.toml"),
        (["--key", "{key}", "--repeat", "0"], "--repeat: must be at least 1, not 0"),
        (
            ["--key", "{key}", "--firmware", "{tmp}/no.bin"],
            "--firmware {tmp}/no.bin does not exist",
        ),
        (["--key", "{key}", "--out", "{tmp}/busy"], "is not an empty folder"),
        (["--rig", "{rig}"], "the following arguments are required: --key"),
    ],
    ids=[
        "missing-key",
        "encrypted-no-env",
        "unset-env",
        "bad-rig",
        "repeat-0",
        "missing-firmware",
        "used-out",
        "no-key",
    ],
)
def test_a_refusal_comes_before_any_run(
    words, expected, rig, templates, keys: KeyPair, encrypted_keys: KeyPair, tmp_path, capsys
) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "run-1").mkdir()
    fill = {"tmp": tmp_path, "key": keys.private, "encrypted": encrypted_keys.private, "rig": rig}
    argv = [word.format(**fill) for word in words]
    if "--rig" not in argv:
        argv += ["--rig", str(rig)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]

    assert main(["accept", *argv]) == 2
    assert expected.format(**fill) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started, nothing half-made
    assert list((tmp_path / "busy").iterdir()) == [tmp_path / "busy" / "run-1"]


def test_a_run_that_stops_with_a_usage_error_gives_no_record(
    rig: Path, templates: Path, keys: KeyPair, tmp_path: Path, capsys
) -> None:
    (templates / "run-1").mkdir()
    (templates / "run-1" / "exit_status").write_text("4")  # pytest's usage error, no run.json
    out = tmp_path / "out"

    status = main(
        [
            "accept",
            "--rig",
            str(rig),
            "--key",
            str(keys.private),
            "--repeat",
            "3",
            "--out",
            str(out),
            "--",
            "-k",
            "no such test",
        ]
    )

    assert status == 2
    assert "run 1: hil run stopped before testing (exit status 4" in capsys.readouterr().err
    assert not (out / "acceptance.json").exists() and not (out / "run-2").exists()
