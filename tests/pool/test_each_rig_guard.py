"""Under --each-rig a rig is one worker's for the whole run: a second worker of the same run
given tests on it (xdist's groups lost, pytest-xdist issue 1386) refuses it at once, naming the
rig, both workers, the cause and the fix, and leaves it alone; a crashed worker's rig passes to
the worker given its tests; spread runs keep no claims."""

from __future__ import annotations

import json
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.artifacts import ArtifactStore
from hil.pool import RigClaims, RigPool, RigTaken
from hil.rig import load_rig
from tests.pool.conftest import plain_rig

pytest_plugins = ["pytester"]

# Two test files that each run on both rigs: with the groups lost, xdist shares the tests out
# by file, so both workers are given tests of both rigs.
SUITE = "import pytest\n\n@pytest.mark.hil\ndef test_on_rig(rig):\n    pass\n"
# What pytest 9.2 does to pytest-xdist 3.8's groups (issue 1386): the `@group` is gone from
# the ids the workers send their controller, so it schedules by file instead.
LOSE_GROUPS = """
import pytest

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        item._nodeid = item._nodeid.split("@")[0]
"""


@pytest.fixture
def benches(tmp_path: Path) -> list[Path]:
    files = []
    for name in ("bench-a", "bench-b"):
        files.append(tmp_path / f"{name}.toml")
        files[-1].write_text(plain_rig(name))
    return files


def test_a_rig_one_worker_took_is_refused_to_another_naming_both_cause_and_fix(
    benches, tmp_path
) -> None:
    rig = load_rig(benches[0])
    folder = tmp_path / "claims" / "run-1"
    RigClaims(folder, "gw0").take(rig)
    RigClaims(folder, "gw0").take(rig)  # its own again: the same worker back on its rig

    with pytest.raises(RigTaken) as taken:
        RigClaims(folder, "gw1").take(rig)

    message = str(taken.value)
    assert message.startswith(
        f"rig 'bench-a' ({benches[0]}) was taken by worker gw0 of this run, and worker gw1 "
        "was given tests on it too"
    )
    assert "--dist loadgroup did not keep the rig's tests together" in message
    assert "pytest-xdist issue 1386" in message
    assert "Fix: pip install 'pytest<9.2'" in message
    RigClaims(tmp_path / "claims" / "run-2", "gw1").take(rig)  # another run: its own claims
    RigClaims(folder, "gw1").take(load_rig(benches[1]))


def test_of_workers_taking_one_rig_at_once_exactly_one_gets_it(benches, tmp_path) -> None:
    rig = load_rig(benches[0])
    folder = tmp_path / "claims"
    results: dict[str, str] = {}
    start = threading.Barrier(8)

    def worker(name: str) -> None:
        start.wait()
        try:
            RigClaims(folder, name).take(rig)
            results[name] = "took"
        except RigTaken as taken:
            results[name] = str(taken)

    threads = [threading.Thread(target=worker, args=(f"gw{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    [winner] = [name for name, result in results.items() if result == "took"]
    assert len(results) == 8
    for name, result in results.items():
        if name != winner:
            assert f"taken by worker {winner} of this run, and worker {name}" in result
    assert sorted(p.name for p in folder.iterdir()) == ["bench-a.json"]  # nothing half-done


def test_a_second_worker_of_the_run_leaves_the_rig_alone_and_its_tests_get_the_reason(
    benches, tmp_path
) -> None:
    rigs = [load_rig(path) for path in benches]
    store, folder = ArtifactStore(tmp_path / "run"), tmp_path / "claims"
    first = RigPool(
        rigs, store, each=True, nested=True, wait_s=0.0, claims=RigClaims(folder, "gw0")
    )
    second = RigPool(
        rigs, store, each=True, nested=True, wait_s=0.0, claims=RigClaims(folder, "gw1")
    )
    first.open(first.run("bench-a"))  # it does not come up, and is given back

    run = second.run("bench-a")

    assert first.run("bench-a").down.startswith("rig 'bench-a' could not be brought up: ")
    assert first.run("bench-a").store.root == tmp_path / "run" / "bench-a"
    assert run.down.startswith(
        f"rig 'bench-a' ({benches[0]}) was taken by worker gw0 of this run, and worker gw1"
    ), run.down
    assert run.store.root == tmp_path / "run" / "bench-a@gw1"  # beside the first one's, not over
    assert second.run("bench-b").down is None
    assert second.run("bench-b").store.root == tmp_path / "run" / "bench-b"


def test_forgetting_a_crashed_worker_frees_its_rigs_only(benches, tmp_path) -> None:
    rig_a, rig_b = (load_rig(path) for path in benches)
    folder = tmp_path / "claims"
    RigClaims(folder, "gw0").take(rig_a)
    RigClaims(folder, "gw1").take(rig_b)

    RigClaims.forget(folder, "gw0")

    RigClaims(folder, "gw2").take(rig_a)
    with pytest.raises(RigTaken, match="taken by worker gw1 of this run"):
        RigClaims(folder, "gw2").take(rig_b)


def test_spread_runs_keep_no_claims_a_rig_given_back_is_the_next_workers(benches, tmp_path) -> None:
    rigs = [load_rig(benches[0])]
    store = ArtifactStore(tmp_path / "run")
    first = RigPool(rigs, store, each=False, nested=True, wait_s=0.0)
    second = RigPool(rigs, store, each=False, nested=True, wait_s=0.0, first=1)
    assert first.claims is None

    assert first.claim().name == "bench-a"  # it does not come up, and is given back
    assert second.claim().name == "bench-a"


def test_an_each_rig_run_whose_groups_are_lost_refuses_the_second_worker(benches, pytester) -> None:
    pytester.makeconftest(LOSE_GROUPS)
    pytester.makepyfile(test_one=SUITE, test_two=SUITE)
    run = pytester.path / "run"
    pytester.runpytest_subprocess(
        "-n", "2", "--rig", benches[0].parent, "--each-rig", "--rig-wait", "0",
        "-p", "no:cacheprovider", "--hil-artifacts", run, "--junitxml", pytester.path / "j.xml",
    )  # fmt: skip

    errors = junit_errors(pytester.path / "j.xml")
    assert len(errors) == 4, errors  # the rigs have no console: every test errors
    taken = {name: text for name, text in errors.items() if "was taken by worker" in text}
    assert taken, errors
    for name, text in taken.items():
        rig = name[name.index("[") + 1 : -1]
        assert f"rig {rig!r} (" in text and "of this run, and worker gw" in text
        assert "pytest-xdist issue 1386" in text
        worker = re.search(r"and worker (gw\d+) was given", text).group(1)
        refused = json.loads((run / f"{rig}@{worker}" / "run.json").read_text())
        [test] = refused["tests"]  # the refused test, recorded apart
        assert test["nodeid"].endswith(name.replace(".", ".py::", 1)), test
        assert test["outcome"] == "error"
        kept = json.loads((run / rig / "run.json").read_text())  # the first worker's, whole
        assert [test["outcome"] for test in kept["tests"]] == ["error"], kept["tests"]
        assert "could not be brought up" in kept["tests"][0]["message"]
    assert not (run / "_claims").exists()  # the controller clears the run's claims


def test_an_each_rig_run_with_its_groups_refuses_nothing(benches, pytester) -> None:
    pytester.makepyfile(test_one=SUITE, test_two=SUITE)
    pytester.runpytest_subprocess(
        "-n", "2", "--rig", benches[0].parent, "--each-rig", "--rig-wait", "0",
        "-p", "no:cacheprovider", "--hil-artifacts", pytester.path / "run",
        "--junitxml", pytester.path / "j.xml",
    )  # fmt: skip

    errors = junit_errors(pytester.path / "j.xml")
    assert len(errors) == 4, errors  # the rigs have no console: each errors its own tests
    assert not any("was taken by worker" in text for text in errors.values()), errors
    brought_up = sorted(name for name, text in errors.items() if "could not be brought up" in text)
    assert brought_up == ["test_one.test_on_rig[bench-a]", "test_one.test_on_rig[bench-b]"]


def junit_errors(path: Path) -> dict[str, str]:
    """Each erroring testcase in a JUnit file (`module.name`), and its error's message."""
    return {
        f"{case.get('classname').rsplit('.')[-1]}.{case.get('name')}": error.get("message", "")
        for case in ET.parse(path).getroot().iter("testcase")
        for error in case.iter("error")
    }


CRASHING = """
import os
from pathlib import Path

def test_first(hil_rig):
    pass

def test_crash(hil_rig):
    mark = Path("crashed")
    if hil_rig.name == "bench-a" and not mark.exists():
        mark.touch()
        os._exit(1)

def test_after(rig):
    pass
"""


def test_a_crashed_workers_rig_goes_to_the_worker_given_its_tests(benches, pytester) -> None:
    pytester.makepyfile(test_crashing=CRASHING)
    xml = pytester.path / "j.xml"
    result = pytester.runpytest_subprocess(
        "-n", "2", "--rig", benches[0].parent, "--each-rig", "-p", "no:cacheprovider",
        "--hil-artifacts", pytester.path / "run", "--junitxml", xml,
    )  # fmt: skip

    text = "\n".join(result.outlines)
    assert "replacing crashed worker gw0" in text or "replacing crashed worker gw1" in text, text
    errors = junit_errors(xml)
    for rig in ("bench-a", "bench-b"):  # bench-a's on the new worker, brought up there
        message = errors[f"test_crashing.test_after[{rig}]"]
        assert f"RigDown: rig {rig!r} could not be brought up: ConsoleError" in message, message
