"""Artifact folders: one per run even when runs start together, one per test even when it is quiet,
in run order, and the suites' measurements and refusal messages in them when a test fails."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from hil import artifacts
from hil.artifacts import ArtifactStore, default_root
from hil.ota.sender import OtaResult
from hil.protocol import ota

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
SUITES = ROOT / "test_suites"
RUNS = 32


class _FrozenClock(datetime):
    """Every run starts in the same microsecond: only the exclusive mkdir tells them apart."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return cls(2024, 5, 1, 12, 0, 0, 123456)


def _claim_at_once(count: int) -> list[Path]:
    start = threading.Barrier(count)

    def claim(_: int) -> Path:
        start.wait()
        return default_root()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(claim, range(count)))


def _shared(roots: list[Path]) -> list[str]:
    return sorted({root.name for root in roots if roots.count(root) > 1})


def test_runs_started_at_once_get_their_own_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    roots = _claim_at_once(RUNS)
    assert len(set(roots)) == RUNS, f"runs shared folders: {_shared(roots)}"
    assert all(root.parent == Path("hil-artifacts") and root.is_dir() for root in roots)


def test_runs_in_the_same_microsecond_still_get_their_own_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(artifacts, "datetime", _FrozenClock)
    roots = _claim_at_once(RUNS)
    assert len(set(roots)) == RUNS, f"runs shared folders: {_shared(roots)}"
    assert "20240501-120000-123456" in {root.name for root in roots}


def test_run_folders_sort_in_the_order_the_runs_started(tmp_path, monkeypatch) -> None:
    names = [default_root(tmp_path / "real").name for _ in range(20)]
    assert names == sorted(names)
    monkeypatch.setattr(artifacts, "datetime", _FrozenClock)
    names = [default_root(tmp_path / "frozen").name for _ in range(12)]
    assert names == sorted(names), "a suffixed name must sort after the names taken before it"


def test_begin_test_makes_the_folder_before_anything_is_written(tmp_path) -> None:
    store = ArtifactStore(tmp_path / "run")
    store.start()
    folder = store.begin_test("test_x.py::test_quiet[a]")
    assert folder == tmp_path / "run" / "0001-test_x.py__test_quiet[a]"
    assert folder.is_dir() and list(folder.iterdir()) == []
    store.end_test()
    assert folder.is_dir()


def test_test_folders_sort_in_run_order_and_never_share_a_name(tmp_path) -> None:
    store = ArtifactStore(tmp_path / "run")
    store.start()
    long_id = "test_x.py::test_p[" + "a" * 300  # shortened, every one to the same name
    nodeids = [f"{long_id}{n}]" for n in range(12)] + ["test_b.py::test_z", "test_a.py::test_a"]
    names = [store.begin_test(nodeid).name for nodeid in nodeids]
    assert len(set(names)) == len(nodeids)
    assert names == sorted(names)
    assert max(len(name) for name in names) <= artifacts.NAME_MAX


def test_a_store_never_started_claims_no_folder(tmp_path) -> None:
    store = ArtifactStore(base=tmp_path / "base")
    assert store.begin_test("tests/test_unit.py::test_x") is None
    assert store.write("measurements.json", "[]") is None
    store.end_test()
    assert not (tmp_path / "base").exists()
    assert store.where == f"{tmp_path / 'base'}/<start time>/"


QUIET_RIG = """
[rig]
name = "quiet"
[console]
driver = "serial"
port = "/dev/hil-test-no-such-console"
[broker]
driver = "embedded"
"""


def test_a_failed_test_that_logged_nothing_has_its_folder(pytester) -> None:
    (pytester.path / "rig.toml").write_text(QUIET_RIG)
    pytester.makepyfile(
        test_inner="import pytest\n\n@pytest.mark.hil\n"
        "def test_quiet():\n    raise AssertionError('no log')\n"
    )
    result = pytester.runpytest("--rig", "rig.toml", "--hil-artifacts", "art")
    result.assert_outcomes(failed=1)
    folder = pytester.path / "art" / "0001-test_inner.py__test_quiet"
    assert json.loads((folder / "result.json").read_text())["message"] == "AssertionError: no log"


def _suite_module(name: str) -> ModuleType:
    """A suite file as a module, so its helpers can be driven by a stand-in device."""
    spec = importlib.util.spec_from_file_location(f"suite_{name}", SUITES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _AcceptingDut:
    """A device that takes every image, even one it must refuse."""

    version = "1.0.0"
    console = SimpleNamespace(mark=lambda: 0)

    async def current_version(self) -> str:
        return self.version

    async def ota(self, image: bytes, faults=None) -> OtaResult:  # type: ignore[no-untyped-def]
        return OtaResult(len(image), 5, 0.5, 0, 0, 8, ota.parse_reply(ota.SUCCESS))


async def test_an_accepted_refusal_names_the_devices_answer() -> None:
    refused = _suite_module("test_ota").refused
    with pytest.raises(pytest.fail.Exception, match=r"accepted .* answered 'OTA:SUCCESS'"):
        await refused(_AcceptingDut(), bytes(2048))


# suite test -> the twin fault that makes it fail after its measured action
FAILS_AFTER_MEASURING = {
    "test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext[seed_test_message]": (
        "echo_no_prefix"
    ),
    "test_ota.py::test_ota_delivers_the_image_despite[drop_middle]": "ota_no_request",
    "test_ota.py::test_corrupted_byte_is_refused_at_verify": "ota_skip_verify",
}


@pytest.mark.slow
def test_failed_suite_tests_keep_their_measurements_and_say_what_the_device_did(tmp_path) -> None:
    rig = tmp_path / "sim.toml"
    listed = ", ".join(f'"{f}"' for f in FAILS_AFTER_MEASURING.values())
    text = (ROOT / "rigs" / "sim.toml").read_text()
    rig.write_text(text.replace("[sim]\n", f"[sim]\nfaults = [{listed}]\n", 1))
    art, junit = tmp_path / "art", tmp_path / "junit.xml"
    targets = [str(SUITES / node) for node in FAILS_AFTER_MEASURING]
    command = [sys.executable, "-m", "pytest", "--rig", str(rig), "-p", "no:cacheprovider"]
    command += ["--hil-artifacts", str(art), "--junitxml", str(junit), "-q", *targets]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    failures = {
        f"{case.get('classname', '').rsplit('.', 1)[-1]}.py::{case.get('name')}": failure
        for case in ET.parse(junit).iter("testcase")
        if (failure := case.find("failure")) is not None
    }
    assert set(failures) == set(FAILS_AFTER_MEASURING), run.stdout[-3000:]
    folders = {
        t["nodeid"]: t["folder"] for t in json.loads((art / "run.json").read_text())["tests"]
    }
    for node in list(FAILS_AFTER_MEASURING)[:2]:
        folder = art / folders[f"test_suites/{node}"]
        measured = json.loads((folder / "measurements.json").read_text())
        assert measured, f"{node} failed without its measurements"
    refusal = failures["test_ota.py::test_corrupted_byte_is_refused_at_verify"]
    assert "it answered 'OTA:SUCCESS'" in refusal.get("message", ""), refusal.get("message")
