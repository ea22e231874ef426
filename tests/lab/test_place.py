"""Runs through a real labgrid coordinator: the place waited for, acquired and always given back.

Each run is `hil run` (or `hil doctor`) in its own process against the rig whose [labgrid]
table names the lab's place; the console and relay it opens are the exporter's ser2net ports.
What the coordinator says (its own log of the place, its reservations, `labgrid-client who`)
is the reference, never hil's view of it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from hil.cli import lab as lab_cli
from hil.lab import LabError, LabgridOptions
from hil.lab.check import check_place
from hil.lab.place import PlaceHold

from .conftest import ECHO, HIL, ROOT, Lab, needs_lab, stopped, until

pytestmark = needs_lab


def _passed(output: str) -> bool:
    """pytest's closing line says one test passed and nothing else went wrong."""
    last = output.strip().splitlines()[-1]
    return re.search(r"\b1 passed\b", last) is not None and not re.search("failed|error", last)


def test_two_runs_on_one_place_queue_one_after_the_other(free_place: Lab) -> None:
    before = len(free_place.place_events())
    first, second = free_place.start_run(*ECHO), free_place.start_run(*ECHO)
    with stopped(first, second):
        codes = first.wait(90), second.wait(90)
    outputs = first.output(), second.output()
    assert codes == (0, 0), "\n=====\n".join(o[-2500:] for o in outputs)
    assert all(_passed(o) for o in outputs)
    for output in outputs:
        assert f"hil: acquired labgrid place {free_place.place} on " in output
        assert "by board power cycle" in output  # the relay, through the place's ser2net port
    console_logs = list(free_place.workdir.glob("art-*/**/console.log"))
    assert sum("LCD: Online" in log.read_text() for log in console_logs) >= 2  # its console
    waited = [o for o in outputs if f"hil: waiting for place {free_place.place}: held by " in o]
    assert len(waited) == 1, outputs
    assert "this run is 1 of 1 in its queue" in waited[0]
    me = free_place.me()
    events = free_place.place_events()[before:]
    assert events == [f"acquired by {me}", "released", f"acquired by {me}", "released"], events
    assert free_place.holder() is None
    assert free_place.reservations() == []


def test_a_killed_run_leaves_the_place_reclaimable(free_place: Lab) -> None:
    killed = free_place.start_run(*ECHO)
    with stopped(killed):
        until(lambda: "hil: acquired labgrid place" in killed.output(), 30, "the run holding it")
        killed.signal(signal.SIGKILL)
        killed.wait(10)
    assert free_place.holder() == free_place.me()  # labgrid keeps a place whose client is gone

    doctor = free_place.hil("doctor", "--rig", str(free_place.rig))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert (
        f"hil: place {free_place.place} was left acquired by a run that is gone (pid "
        f"{killed.pid}, since "
    ) in doctor.stderr
    place_row = rf"^place +ok +acquired labgrid place {free_place.place} "
    assert re.search(place_row, doctor.stdout, re.M), doctor.stdout
    assert re.search(r"^console +ok +port rfc2217://127\.0\.0\.1:\d+", doctor.stdout, re.M)
    assert free_place.holder() is None


def test_sigterm_while_holding_the_place_releases_it(free_place: Lab) -> None:
    run = free_place.start_run(*ECHO)
    with stopped(run):
        until(lambda: "hil: acquired labgrid place" in run.output(), 30, "the run holding it")
        run.signal(signal.SIGTERM)
        code = run.wait(30)
    assert code != 0
    assert free_place.place not in free_place.labgrid_client("who").stdout, run.output()[-2000:]
    assert free_place.place_events()[-1] == "released"


def test_a_waiting_run_is_in_the_queue_and_sigterm_takes_it_out(free_place: Lab, capsys) -> None:
    """The place acquired by hand (labgrid-client, same host and user): no dead run's place,
    so the run waits its turn instead of taking it."""
    assert free_place.labgrid_client("-p", free_place.place, "acquire").returncode == 0
    run = free_place.start_run(*ECHO)
    with stopped(run):
        until(lambda: "hil: waiting for place" in run.output(), 30, "the run waiting")
        assert lab_cli.main(["places", "--coordinator", free_place.coordinator]) == 0
        run.signal(signal.SIGTERM)
        code = run.wait(30)
    me = free_place.me()
    assert f"held by {me} since " in run.output()
    places = capsys.readouterr().out
    row = next(line for line in places.splitlines() if free_place.place in line)
    assert row.startswith(f"  {free_place.place}  board=esp32s3 modem=sim7600  {me} since ")
    assert row.endswith("1 waiting"), places
    assert code != 0
    assert free_place.reservations() == []
    assert free_place.holder() == me  # the acquisition by hand is left alone
    with free_place.client() as client:
        client.release(free_place.place, holder=me)


def test_rigs_check_and_lab_places_see_the_place(free_place: Lab) -> None:
    check = free_place.hil("rigs", "check", str(free_place.rig))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"place {free_place.place} on {free_place.coordinator}: free" in check.stdout
    for name in ("console", "relay"):
        exported = f"port {{labgrid:{name}}}: exported as bench-host/bench/NetworkSerialPort/{name}"
        assert exported in check.stdout
    assert "rig file OK" in check.stdout

    places = free_place.hil("lab", "places", "--rig", str(free_place.rig))
    assert places.returncode == 0, places.stderr
    row = next(line for line in places.stdout.splitlines() if free_place.place in line)
    assert row.split() == [free_place.place, "board=esp32s3", "modem=sim7600", "-", "-"]


def test_a_port_the_place_lacks_is_named_with_the_fix(free_place: Lab) -> None:
    options = LabgridOptions(free_place.place, free_place.coordinator)
    lines, problems = check_place(options, ["console", "uart"])
    assert problems == 1
    assert "  port {labgrid:uart}: NOT IN THE PLACE" in lines

    hold = PlaceHold(options, ["uart"], notice=print, lock_dir=free_place.workdir / "locks")
    try:
        hold.acquire()
        raise AssertionError("acquired a place without the port the rig names")
    except LabError as exc:
        assert str(exc) == (
            f"place {free_place.place} has no resource named 'uart' (its resources: console "
            "(NetworkSerialPort), relay (NetworkSerialPort)); fix {labgrid:uart} in the rig, or "
            f"name one with `labgrid-client -p {free_place.place} add-named-match "
            "EXPORTER/GROUP/NetworkSerialPort/RESOURCE uart`"
        )
    finally:
        hold.release()
    assert free_place.holder() is None
    assert free_place.reservations() == []


def test_without_labgrid_the_error_names_the_extra(lab: Lab) -> None:
    """labgrid made unimportable, as on a machine without the extra. Its distribution is still
    installed here, so the run also keeps pytest from autoloading its plugin and from marking
    it for assertion rewriting, which a machine without it would not do."""
    message = 'labgrid is not installed: pip install "hil[labgrid]"'
    no_labgrid = "import sys; sys.modules['labgrid'] = None; "
    run = ["run", "--rig", str(lab.rig), "-p", "no:labgrid", "--assert=plain", *ECHO]
    for args in (["rigs", "check", str(lab.rig)], [*run, "-p", "no:cacheprovider"]):
        done = subprocess.run(
            [sys.executable, "-c", no_labgrid + HIL, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=lab.env(),
        )
        assert done.returncode == 1, (args, done.stdout[-2000:], done.stderr[-2000:])
        assert message in done.stdout, (args, done.stdout[-2000:], done.stderr[-2000:])
