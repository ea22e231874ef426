"""Keys made by openssl (never by hil) and run folders in the run.json contract's format."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hil.accept.record import RigFacts, RunResult, Selection, build_record

RIG_TEXT = '[rig]\nname = "bench-7"\n'
RIG = RigFacts("bench-7", hashlib.sha256(RIG_TEXT.encode()).hexdigest(), "hardware")
FIRMWARE_SHA = "5d1f0c2e" * 8
PASSPHRASE_ENV = "HIL_TEST_KEY_PASSPHRASE"
PASSPHRASE = "correct horse battery"


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def make_key_pair(folder: Path, name: str, *extra: str) -> KeyPair:
    """An Ed25519 pair written by `openssl genpkey` and `openssl pkey -pubout`."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    made = openssl("genpkey", "-algorithm", "ed25519", *extra, "-out", private)
    assert made.returncode == 0, made.stderr
    passin = ["-passin", f"pass:{PASSPHRASE}"] if extra else []
    out = openssl("pkey", "-in", private, *passin, "-pubout", "-out", public)
    assert out.returncode == 0, out.stderr
    return KeyPair(private, public)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_key_pair(tmp_path_factory.mktemp("keys"), "release")


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_key_pair(tmp_path_factory.mktemp("other-keys"), "intruder")


@pytest.fixture(scope="session")
def encrypted_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    folder = tmp_path_factory.mktemp("encrypted-keys")
    return make_key_pair(folder, "sealed", "-aes-256-cbc", "-pass", f"pass:{PASSPHRASE}")


def case(nodeid: str, outcome: str = "passed", measurements: list | None = None) -> dict:
    """One test of a synthetic run; its measurements go to its folder's measurements.json."""
    return {"nodeid": nodeid, "outcome": outcome, "measurements": measurements}


def echo_latency(value: float = 0.42) -> dict[str, Any]:
    passed = value <= 5.0
    return {
        "name": "echo_round_trip",
        "value": value,
        "unit": "s",
        "low": None,
        "high": 5.0,
        "passed": passed,
    }


def write_run(
    folder: Path,
    tests: list[dict],
    *,
    outcome: str | None = None,
    firmware_sha: str | None = FIRMWARE_SHA,
    firmware_version: str = "1.2.0",
    rig_sha: str = RIG.sha256,
) -> Path:
    """A run folder as `hil run --hil-artifacts folder` leaves it (common.md's contract)."""
    folder.mkdir(parents=True)
    counts = dict.fromkeys(("passed", "failed", "error", "skipped"), 0)
    entries = []
    for n, test in enumerate(tests, 1):
        counts[test["outcome"]] += 1
        name = f"{n:04d}-" + test["nodeid"].replace("::", "__").replace("/", "_")
        (folder / name).mkdir()
        if test["measurements"] is not None:
            (folder / name / "measurements.json").write_text(json.dumps(test["measurements"]))
        failed = test["outcome"] in ("failed", "error")
        result = {
            "nodeid": test["nodeid"],
            "suite": test["nodeid"].split("::")[0].rsplit("/", 1)[-1].removesuffix(".py"),
            "outcome": test["outcome"],
            "duration_s": 0.25 * n,
            "started": "2026-01-05T10:00:00+01:00",
            "ended": "2026-01-05T10:00:01+01:00",
            "folder": name,
            "message": "AssertionError: the first answer must be the plaintext" if failed else None,
        }
        (folder / name / "result.json").write_text(json.dumps(result | {"longrepr": None}))
        entries.append(result)
    if outcome is None:
        outcome = "failed" if counts["failed"] else "error" if counts["error"] else "passed"
    run = {
        "schema": 1,
        "rig": {
            "name": RIG.name,
            "file": "/lab/rigs/bench-7.toml",
            "sha256": rig_sha,
            "kind": RIG.kind,
        },
        "profile": "reference",
        "hil_version": "0.1.0",
        "firmware": {
            "version": firmware_version,
            "sha256": firmware_sha,
            "project": "echo-fw",
            "idf_version": "v5.2.1",
            "build_date": "Jan  4 2026",
            "build_time": "17:02:11",
            "path": "/builds/echo-fw.bin",
            "method": "serial",
            "written": True,
        },
        "device": {
            "online_version": firmware_version,
            "boot_reason": "board power cycle",
            "means": "board power cycle",
            "bringup_s": 1.1,
        },
        "host": "lab-host",
        "started": "2026-01-05T10:00:00+01:00",
        "ended": "2026-01-05T10:01:00+01:00",
        "suites_revision": "0123abcd" * 5,
        "suites_dirty": False,
        "outcome": outcome,
        "counts": counts,
        "tests": entries,
    }
    (folder / "run.json").write_text(json.dumps(run, indent=2))
    return folder


def passing_tests() -> list[dict]:
    return [
        case(
            "test_suites/test_echo.py::test_echo[seed_test_message]", "passed", [echo_latency(0.42)]
        ),
        case("test_suites/test_echo.py::test_echo[utf8_multibyte]", "passed", [echo_latency(0.5)]),
        case(
            "test_suites/test_ota.py::test_ota_throughput",
            "passed",
            [
                {
                    "name": "throughput",
                    "value": 3.75,
                    "unit": "kB/s",
                    "low": 1.0,
                    "high": None,
                    "passed": True,
                }
            ],
        ),
        case("test_suites/test_broker_protocol.py::test_mqtt_version"),
    ]


def result_of(folder: Path, index: int, exit_status: int = 0) -> RunResult:
    return RunResult(
        index, folder, exit_status, "2026-01-05T10:00:00+01:00", "2026-01-05T10:01:00+01:00"
    )


def record_of(folders: list[Path], **options: Any) -> dict[str, Any]:
    """The unsigned record of `folders` (exit status 0 each unless told)."""
    statuses = options.pop("statuses", [0] * len(folders))
    return build_record(
        [result_of(f, n, s) for n, (f, s) in enumerate(zip(folders, statuses, strict=True), 1)],
        rig=options.pop("rig", RIG),
        selection=options.pop("selection", Selection((), None)),
        repeat=len(folders),
        firmware_given=options.pop("firmware_given", True),
        created="2026-01-05T10:02:00+01:00",
        hil_version="0.1.0",
    )


@pytest.fixture
def passing_runs(tmp_path: Path) -> list[Path]:
    """Two runs of four tests each, all passed, on the same firmware and rig."""
    return [write_run(tmp_path / f"run-{n}", passing_tests()) for n in (1, 2)]
