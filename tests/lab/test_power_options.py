"""The `labgrid` power driver's rig table, and what it says before any place is acquired."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil import cli
from hil.lab import LabError
from hil.lab.place import POWER_PREFIX, wanted_classes
from hil.power import CommonPowerOptions, PowerError
from hil.power.labgrid import LabgridPower, LabgridPowerOptions
from hil.rig import load_rig
from hil.schema import ConfigError

from .conftest import HIL, needs_labgrid

RIG = """
[rig]
name = "bench-3"
[labgrid]
coordinator = "127.0.0.1:9"
place = "bench-3"
[console]
driver = "serial"
port = "{{labgrid:console}}"
[power]
driver = "labgrid"
port = "{port}"
[broker]
driver = "external"
host = "broker.example"
"""


def write(tmp_path: Path, port: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(RIG.format(port=port))
    return path


def test_the_port_must_name_a_place_resource(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_rig(write(tmp_path, "modem-power"))
    assert str(info.value).endswith(
        "[power.port] expected {labgrid:NAME}, the name of the place's NetworkPowerPort, "
        "got 'modem-power'"
    )


def test_a_rig_names_its_power_port_like_its_serial_ports(tmp_path: Path) -> None:
    rig = load_rig(write(tmp_path, "{labgrid:modem-power}"))
    assert rig.power is not None and rig.power.cls is LabgridPower
    assert rig.lab_resources == ["console", "modem-power"]


def test_each_resource_is_wanted_as_the_class_its_driver_opens(tmp_path: Path) -> None:
    """`hil power` waits only for the ports its table names: a hung board's console may be gone."""
    rig = load_rig(write(tmp_path, "{labgrid:modem-power}"))
    assert wanted_classes(rig) == {
        "console": "NetworkSerialPort",
        "modem-power": "NetworkPowerPort",
    }
    assert wanted_classes(rig, ["power"]) == {"modem-power": "NetworkPowerPort"}
    assert wanted_classes(rig, ["board_power"]) == {}


def test_one_resource_opened_as_two_kinds_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "{labgrid:modem-power}")
    path.write_text(
        path.read_text() + '[board_power]\ndriver = "lcus"\nport = "{labgrid:modem-power}"\n'
    )
    with pytest.raises(LabError) as info:
        wanted_classes(load_rig(path))
    assert str(info.value) == (
        "{labgrid:modem-power} is opened as a NetworkPowerPort and as a NetworkSerialPort "
        "([board_power] port); give each driver a resource of its kind"
    )


def test_outside_a_place_the_driver_says_how_to_switch_it(tmp_path: Path) -> None:
    driver = LabgridPower(
        LabgridPowerOptions("{labgrid:modem-power}"), CommonPowerOptions(), tmp_path
    )
    with pytest.raises(PowerError) as info:
        driver.open()
    assert "known only while the place is acquired" in str(info.value)


def test_a_pdu_url_s_credentials_are_never_shown(tmp_path: Path) -> None:
    described = {
        "name": "modem-power",
        "place": "bench-3",
        "params": {"model": "simplerest", "host": "http://lab:s3cret@10.0.0.9/o/{index}/{value}"},
    }
    port = POWER_PREFIX + json.dumps({**described, "params": {**described["params"], "index": "3"}})
    driver = LabgridPower(LabgridPowerOptions(port), CommonPowerOptions(), tmp_path)
    assert driver.describe() == (
        "labgrid power port modem-power of place bench-3 "
        "(simplerest http://10.0.0.9/o/{index}/{value} index 3)"
    )


@needs_labgrid
def test_hil_power_on_an_unreachable_coordinator_is_one_line(tmp_path: Path, capsys) -> None:
    """Port 9 (discard) on loopback: nothing listens, the coordinator cannot be reached."""
    assert cli.main(["power", "off", "--rig", str(write(tmp_path, "{labgrid:modem-power}"))]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hil power: cannot reach the labgrid coordinator at 127.0.0.1:9;"), err
    assert len(err.splitlines()) == 1


@needs_labgrid
def test_hil_lab_places_on_an_unreachable_coordinator_says_it_once() -> None:
    """In its own process, as a user runs it: labgrid's client logs `coordinator is
    unavailable` on the root logger while it connects; only hil's line, with the fix, shows."""
    done = subprocess.run(
        [sys.executable, "-c", HIL, "lab", "places", "--coordinator", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "hil lab: cannot reach the labgrid coordinator at 127.0.0.1:9; check that it runs "
        "and [labgrid] coordinator (or LG_COORDINATOR)"
    ], done.stderr
