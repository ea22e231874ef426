"""Claiming a rig of a pool: each process gets the first free one; with none free, it waits,
says who holds them, and takes one as soon as it is given back, or gives up naming them (and
a run's rig tests error with that)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hil.artifacts import ArtifactStore
from hil.lock import RigLock
from hil.pool import PoolBusy, RigPool, claim
from hil.rig import Rig, load_rig
from tests.pool.conftest import plain_rig
from tests.waiting import until

pytest_plugins = ["pytester"]

HOLD = """
import sys
from hil.lock import RigLock
from hil.pool import claim
from hil.rig import load_rig

rigs = [load_rig(path) for path in sys.argv[1:]]
rig, lock = claim(rigs, lambda rig: RigLock(rig.path, rig.name).__enter__(), 0.0, print)
print("claimed", rig.name, flush=True)
sys.stdin.read()
"""


def take(rig: Rig) -> RigLock:
    lock = RigLock(rig.path, rig.name)
    lock.acquire()
    return lock


@pytest.fixture
def pool(tmp_path) -> list[Path]:
    files = []
    for name in ("bench-a", "bench-b"):
        files.append(tmp_path / f"{name}.toml")
        files[-1].write_text(plain_rig(name))
    return files


def holder(files: list[Path]) -> tuple[subprocess.Popen[str], str]:
    """A process that claims a rig of `files` and holds it until its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, *map(str, files)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return process, process.stdout.readline().strip()


def test_each_process_claims_the_next_free_rig_and_a_third_waits_then_names_both(pool) -> None:
    rigs = [load_rig(path) for path in pool]
    first, first_said = holder(pool)
    second, second_said = holder(pool)
    try:
        assert first_said == "claimed bench-a"
        assert second_said == "claimed bench-b"
        notices: list[str] = []
        started = time.monotonic()
        with pytest.raises(PoolBusy) as busy:
            claim(rigs, take, 1.0, notices.append, poll_s=0.1)
        waited = time.monotonic() - started
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
    message = str(busy.value)
    assert "every rig of the pool (2) stayed in use for 1 s" in message
    assert f"rig bench-a ({pool[0]}) is in use by pid {first.pid}" in message
    assert f"rig bench-b ({pool[1]}) is in use by pid {second.pid}" in message
    assert "--rig-wait" in message
    assert 1.0 <= waited < 5.0
    assert len(notices) == 1 and notices[0].startswith("hil: every rig of the pool (2) is in use")


def test_a_waiting_claim_takes_the_rig_given_back(pool) -> None:
    rigs = [load_rig(path) for path in pool]
    first, _ = holder(pool)
    second, _ = holder(pool)
    notices: list[str] = []
    got: list[tuple[Rig, RigLock]] = []
    waiter = threading.Thread(target=lambda: got.append(claim(rigs, take, 30.0, notices.append)))
    try:
        waiter.start()
        until(lambda: notices, 10, "the waiting notice")
        first.stdin.close()  # its holder exits: the lock dies with it
        first.wait(timeout=10)
        waiter.join(timeout=10)
        assert not waiter.is_alive()
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
    [(rig, lock)] = got
    try:
        assert rig.name == "bench-a"
    finally:
        lock.release()


def test_a_run_whose_rigs_are_all_held_waits_then_errors_naming_the_holders(pool, pytester) -> None:
    pytester.makepyfile(
        test_on_rig="import pytest\n\n@pytest.mark.hil\ndef test_on_rig(rig):\n    pass\n"
    )
    with RigLock(pool[0]), RigLock(pool[1]):
        started = time.monotonic()
        result = pytester.runpytest(
            "--rig", pool[0].parent, "--rig-wait", "1", "--hil-artifacts", pytester.path / "run"
        )
        waited = time.monotonic() - started
    result.assert_outcomes(errors=1)
    text = "\n".join(result.outlines + result.errlines)
    assert "hil: every rig of the pool (2) is in use, waiting up to 1 s" in text
    assert "no rig to run on: PoolBusy: every rig of the pool (2) stayed in use for 1 s" in text
    assert f"rig bench-a ({pool[0]}) is in use by pid {os.getpid()}" in text
    assert f"rig bench-b ({pool[1]}) is in use by pid {os.getpid()}" in text
    assert 1.0 <= waited < 30.0
    assert not any((pytester.path / "run").glob("*/run.json"))


def test_a_worker_tries_from_its_own_number_and_a_rig_that_cannot_start_is_given_back(
    pool, tmp_path
) -> None:
    rigs = [load_rig(path) for path in pool]
    store = ArtifactStore(tmp_path / "run")
    second = RigPool(rigs, store, each=False, nested=True, wait_s=0.0, first=1)

    run = second.claim()

    assert run is not None and run.name == "bench-b"
    assert run.down.startswith("rig 'bench-b' could not be brought up: ")
    assert "/dev/hil-test-no-such-console" in run.down
    assert run.store.root == tmp_path / "run" / "bench-b"
    with RigLock(pool[1]):  # given back, though the pool still names it as this one's rig
        pass
    assert second.claim() is run
