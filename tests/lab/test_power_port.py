"""A place's power ports: NetworkPowerPorts switched through labgrid's own NetworkPowerDriver.

The PDU is a small HTTP server here that speaks labgrid's `simplerest` model and turns each
outlet's on and off into the LCUS frame of the twin's relay for that channel (wired normally
closed, as the bench's rig says), so an outlet switched off really cuts the twin's modem or
board. A second exporter exports its two outlets; the place matches them with the bench's
console. What the PDU was asked and what the coordinator logs are the reference.
"""

from __future__ import annotations

import http.server
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import serial

from hil.lab import LabError, LabgridOptions
from hil.lab.check import check_place
from hil.lab.place import PlaceHold, wanted_classes
from hil.rig import load_rig

from .conftest import (
    EXPORTER,
    GROUP,
    HIL,
    ROOT,
    Lab,
    Spawned,
    _python_env,
    _started,
    needs_lab,
    rig_text,
    stopped,
    until,
)

# one worker builds this module's lab (coordinator, two exporters, twin) once, for all its tests
pytestmark = [*needs_lab, pytest.mark.xdist_group("lab-pdu")]
PDU_EXPORTER = "pdu-host"
PDU_GROUP = "pdu"
PDU_PLACE = "esp32s3-sim7600-bench-3-pdu"
OUTLETS = {"modem-power": 1, "board-power": 2}  # the relay channel each outlet drives
RECOVERY = ("-k", "test_recovers_after_power_cut and short")


@dataclass
class Pdu:
    """A simplerest PDU whose outlets drive the twin's LCUS relay; `asked` is what it was told."""

    relay: serial.Serial
    asked: list[tuple[int, bool]] = field(default_factory=list)
    state: dict[int, bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> http.server.ThreadingHTTPServer:
        pdu = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = re.fullmatch(r"/outlet/(\d+)(?:/([01]))?", self.path)
                if found is None:
                    self.send_error(404)
                    return
                index = int(found[1])
                if found[2] is not None:
                    pdu.switch(index, found[2] == "1")
                body = b"1" if pdu.state.get(index, True) else b"0"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def switch(self, channel: int, on: bool) -> None:
        energized = 0 if on else 1  # normally closed: the coil cuts the supply
        frame = bytes((0xA0, channel, energized, (0xA0 + channel + energized) & 0xFF))
        with self.lock:
            self.relay.write(frame)
            self.relay.flush()
            self.asked.append((channel, on))
            self.state[channel] = on


@dataclass
class PduLab:
    lab: Lab
    pdu: Pdu
    rig: Path

    def hil(self, *args: str, timeout: float = 60) -> Spawned:
        argv = [sys.executable, "-c", HIL, *args]
        log = self.lab.workdir / f"hil-{len(list(self.lab.workdir.glob('hil-*.log')))}.log"
        return Spawned(argv, log, ROOT, self.lab.env())

    def place_events(self) -> list[str]:
        prefix = f"{PDU_PLACE}: place "
        lines = self.lab.coordinator_log.read_text(errors="replace").splitlines()
        return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]

    def holder(self) -> str | None:
        with self.lab.client() as client:
            return client.place(PDU_PLACE).acquired


def pdu_rig_text(lab: Lab, broker: str) -> str:
    """The bench's rig with its power from the place's outlets instead of its relay."""
    text = rig_text(lab.coordinator, broker, PDU_PLACE)
    text = text.replace(
        'driver = "lcus"\nport = "{labgrid:relay}"\nchannel = 1\nnormally_closed = true',
        'driver = "labgrid"\nport = "{labgrid:modem-power}"',
    )
    text = text.replace(
        'driver = "lcus"\nport = "{labgrid:relay}"\nchannel = 2\nnormally_closed = true',
        'driver = "labgrid"\nport = "{labgrid:board-power}"',
    )
    assert "{labgrid:relay}" not in text
    return text


@pytest.fixture(scope="module")
def pdu_lab(lab: Lab) -> Iterator[PduLab]:
    pdu = Pdu(serial.Serial(str(lab.ports.relay), 9600, timeout=1))
    server = pdu.serve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/outlet/{{index}}/{{value}}"
    outlets = {
        name: {"cls": "NetworkPowerPort", "model": "simplerest", "host": url, "index": index}
        for name, index in OUTLETS.items()
    }
    exports = lab.workdir / "pdu-exports.yaml"
    exports.write_text(json.dumps({PDU_GROUP: outlets}))
    argv = [sys.executable, "-m", "labgrid.remote.exporter", "-c", lab.coordinator]
    argv += ["--name", PDU_EXPORTER, "--hostname", "127.0.0.1", str(exports)]
    exporter = Spawned(argv, lab.workdir / "pdu-exporter.log", lab.workdir, _python_env())
    try:
        _started(exporter, "connected to coordinator", "the PDU's labgrid-exporter")
        matches = [f"{EXPORTER}/{GROUP}/NetworkSerialPort/console"]
        matches += [f"{PDU_EXPORTER}/{PDU_GROUP}/NetworkPowerPort/{name}" for name in OUTLETS]
        for args in (("create",), ("add-match", *matches)):
            done = lab.labgrid_client("-p", PDU_PLACE, *args)
            assert done.returncode == 0, done.stdout + done.stderr
        broker = re.search(r'host = "([^"]+)"\nport = (\d+)', lab.rig.read_text())
        assert broker is not None
        rig = lab.workdir / "pdu.toml"
        rig.write_text(pdu_rig_text(lab, f"{broker[1]}:{broker[2]}"))
        yield PduLab(lab, pdu, rig)
    finally:
        exporter.stop()
        server.shutdown()
        server.server_close()
        pdu.relay.close()


@pytest.fixture
def free_pdu_place(pdu_lab: PduLab) -> Iterator[PduLab]:
    assert pdu_lab.holder() is None, "an earlier test left the place acquired"
    pdu_lab.pdu.asked.clear()
    yield pdu_lab
    if pdu_lab.holder() is not None:
        pdu_lab.lab.labgrid_client("-p", PDU_PLACE, "release", "--kick")


def test_a_power_cut_through_the_place_s_outlet_is_recovered_from(free_pdu_place: PduLab) -> None:
    """THE proof: the recovery suite's short cut, the modem's supply cut by the place's PDU."""
    lab, pdu = free_pdu_place.lab, free_pdu_place.pdu
    art = lab.workdir / "art-pdu"
    argv = ["run", "--rig", str(free_pdu_place.rig), "-p", "no:cacheprovider", "-p", "no:labgrid"]
    run = free_pdu_place.hil(*argv, "--hil-artifacts", str(art), *RECOVERY)
    with stopped(run):
        code = run.wait(90)
    output = run.output()
    assert code == 0, output[-3000:]
    assert re.search(r"\b1 passed\b", output.strip().splitlines()[-1]), output[-1500:]
    assert f"hil: acquired labgrid place {PDU_PLACE} on " in output
    modem, board = OUTLETS["modem-power"], OUTLETS["board-power"]
    assert (modem, False) in pdu.asked, pdu.asked  # the cut, through the outlet
    cut = pdu.asked.index((modem, False))
    assert (modem, True) in pdu.asked[cut:], pdu.asked  # and power back
    assert (board, False) in pdu.asked[:cut], pdu.asked  # bring-up's board power cycle
    assert pdu.state == {modem: True, board: True}  # left on at the end
    console = next(art.glob("**/console.log")).read_text()
    assert "LCD: Online" in console
    me = lab.me()
    assert free_pdu_place.place_events()[-2:] == [f"acquired by {me}", "released"]
    assert free_pdu_place.holder() is None


def test_hil_power_and_reset_acquire_the_place_and_give_it_back(free_pdu_place: PduLab) -> None:
    """`power off`, then `reset` (a board power cycle); the cycle below ends with an `on`."""
    pdu, rig = free_pdu_place.pdu, str(free_pdu_place.rig)
    me = free_pdu_place.lab.me()
    for args, asked in (
        (("power", "off", "--rig", rig), [(1, False)]),
        (("reset", "--rig", rig), [(2, False), (2, True)]),  # no [reset]: a board power cycle
    ):
        before = len(free_pdu_place.place_events())
        pdu.asked.clear()
        done = free_pdu_place.hil(*args)
        with stopped(done):
            code = done.wait(60)
        assert code == 0, done.output()[-2000:]
        assert pdu.asked == asked, (args, pdu.asked)
        assert "labgrid power port " in done.output()
        assert free_pdu_place.place_events()[before:] == [f"acquired by {me}", "released"]
    assert free_pdu_place.holder() is None


def test_ctrl_c_in_a_power_cycle_releases_the_place_with_power_on(
    free_pdu_place: PduLab,
) -> None:
    pdu = free_pdu_place.pdu
    cycle = free_pdu_place.hil("power", "cycle", "--rig", str(free_pdu_place.rig), "--off-s", "60")
    with stopped(cycle):
        until(lambda: (1, False) in pdu.asked, 40, "the outlet switched off")
        cycle.signal(signal.SIGINT)
        code = cycle.wait(30)
    assert code == 128 + signal.SIGINT, cycle.output()[-2000:]
    assert pdu.asked == [(1, False), (1, True)]
    assert free_pdu_place.place_events()[-1] == "released"
    assert free_pdu_place.holder() is None


def test_ctrl_c_while_waiting_for_the_place_leaves_no_reservation(free_pdu_place: PduLab) -> None:
    lab = free_pdu_place.lab
    assert lab.labgrid_client("-p", PDU_PLACE, "acquire").returncode == 0  # by hand: waited for
    waiting = free_pdu_place.hil("power", "off", "--rig", str(free_pdu_place.rig))
    with stopped(waiting):
        until(lambda: "hil: waiting for place" in waiting.output(), 40, "hil power waiting")
        waiting.signal(signal.SIGINT)
        code = waiting.wait(30)
    assert code == 128 + signal.SIGINT, waiting.output()[-2000:]
    assert free_pdu_place.pdu.asked == []
    assert lab.reservations() == []
    assert free_pdu_place.holder() == lab.me()
    assert lab.labgrid_client("-p", PDU_PLACE, "release").returncode == 0


def test_a_power_port_the_place_lacks_is_named_with_the_fix(
    pdu_lab: PduLab, tmp_path: Path
) -> None:
    """The bench's own place has the relay as a serial port and no outlets."""
    lab = pdu_lab.lab
    rig = load_rig(pdu_lab.rig)
    assert wanted_classes(rig) == {
        "console": "NetworkSerialPort",
        "modem-power": "NetworkPowerPort",
        "board-power": "NetworkPowerPort",
    }
    lines, problems = check_place(LabgridOptions(PDU_PLACE, lab.coordinator), wanted_classes(rig))
    assert problems == 0, lines
    for name in OUTLETS:
        exported = f"exported as {PDU_EXPORTER}/{PDU_GROUP}/NetworkPowerPort/{name}"
        assert f"  port {{labgrid:{name}}}: {exported}" in lines
    options = LabgridOptions(lab.place, lab.coordinator)
    for wanted, message in (
        (
            {"modem-power": "NetworkPowerPort"},
            f"place {lab.place} has no resource named 'modem-power' (its resources: console "
            "(NetworkSerialPort), relay (NetworkSerialPort)); fix {labgrid:modem-power} in the "
            f"rig, or name one with `labgrid-client -p {lab.place} add-named-match "
            "EXPORTER/GROUP/NetworkPowerPort/RESOURCE modem-power`",
        ),
        (
            {"relay": "NetworkPowerPort"},
            f"resource 'relay' of place {lab.place} is a NetworkSerialPort; the labgrid power "
            "driver switches a NetworkPowerPort (a PDU outlet); for a relay exported as a "
            'serial port write driver = "lcus" with port = "{labgrid:relay}"',
        ),
    ):
        hold = PlaceHold(options, wanted, notice=print, lock_dir=tmp_path)
        with pytest.raises(LabError) as info:
            hold.acquire()
        hold.release()
        assert str(info.value) == message
    assert lab.holder() is None
    assert lab.reservations() == []
