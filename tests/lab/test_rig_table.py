"""A rig's [labgrid] table and its `{labgrid:NAME}` ports, checked when the rig file loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli import main
from hil.rig import load_rig
from hil.schema import ConfigError

from .conftest import needs_labgrid

LAB_RIG = """
[rig]
name = "bench-3"
[labgrid]
place = "esp32s3-sim7600-bench-3"
{coordinator}
[console]
driver = "serial"
port = "{{labgrid:console}}"
[power]
driver = "lcus"
port = "{{labgrid:relay}}"
[board_power]
driver = "lcus"
port = "{{labgrid:relay}}"
channel = 2
[broker]
driver = "external"
host = "broker.example"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(text)
    return path


def messages(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_rig(write(tmp_path, text))
    return [str(e) for e in getattr(info.value, "errors", [info.value])]


def test_the_coordinator_comes_from_lg_coordinator_when_the_rig_names_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LG_COORDINATOR", "labgrid.lab.example:20408")
    rig = load_rig(write(tmp_path, LAB_RIG.format(coordinator="")))
    assert rig.labgrid is not None
    assert rig.labgrid.coordinator == "labgrid.lab.example:20408"
    assert rig.labgrid.place == "esp32s3-sim7600-bench-3"
    assert rig.lab_resources == ["console", "relay"]
    assert any("esp32s3-sim7600-bench-3 on the labgrid coordinator" in x for x in rig.summary())


def test_the_rig_names_the_coordinator_over_lg_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LG_COORDINATOR", "elsewhere:1")
    text = LAB_RIG.format(coordinator='coordinator = "lab:20408"')
    assert load_rig(write(tmp_path, text)).labgrid.coordinator == "lab:20408"


def test_no_coordinator_anywhere_is_one_error_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    [message] = messages(tmp_path, LAB_RIG.format(coordinator=""))
    assert message.endswith(
        "[labgrid.coordinator] missing; give the lab's coordinator as host:port or set "
        "LG_COORDINATOR"
    )


def test_bad_labgrid_keys_are_named_together(tmp_path: Path) -> None:
    text = LAB_RIG.format(coordinator='coordinator = "lab:1"\nwait_s = 0\nqueue = 2')
    found = messages(tmp_path, text)
    assert any("[labgrid.wait_s]" in m for m in found), found
    assert any("[labgrid.queue] unknown key" in m for m in found), found


def test_a_labgrid_port_without_a_labgrid_table_is_refused(tmp_path: Path) -> None:
    text = LAB_RIG.format(coordinator="").replace(
        '[labgrid]\nplace = "esp32s3-sim7600-bench-3"\n', ""
    )
    found = messages(tmp_path, text)
    assert len(found) == 3, found
    assert found[0].endswith(
        "[console.port] names a labgrid resource ({labgrid:NAME}) but the rig has no "
        "[labgrid] table naming the place"
    )


def test_an_empty_resource_name_is_refused(tmp_path: Path) -> None:
    text = LAB_RIG.format(coordinator='coordinator = "lab:1"').replace(
        "{labgrid:console}", "{labgrid:}"
    )
    [message] = messages(tmp_path, text)
    assert "[console.port] {labgrid:} names no resource" in message


def test_the_place_s_ports_replace_the_placeholders(tmp_path: Path) -> None:
    rig = load_rig(write(tmp_path, LAB_RIG.format(coordinator='coordinator = "lab:1"')))
    urls = {"console": "rfc2217://10.0.0.7:4001", "relay": "rfc2217://10.0.0.7:4002"}
    served = rig.with_lab_ports(urls)
    assert served.console.options.port == "rfc2217://10.0.0.7:4001"
    assert served.power.options.port == served.board_power.options.port == urls["relay"]
    assert served.board_power.options.channel == 2
    assert rig.console.options.port == "{labgrid:console}"  # the loaded rig is left as it was


@needs_labgrid
def test_rigs_check_names_an_unreachable_coordinator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = write(tmp_path, LAB_RIG.format(coordinator='coordinator = "127.0.0.1:1"'))
    assert main(["rigs", "check", str(rig)]) == 1
    out = capsys.readouterr().out
    assert (
        "  place esp32s3-sim7600-bench-3: cannot reach the labgrid coordinator at 127.0.0.1:1; "
        "check that it runs and [labgrid] coordinator (or LG_COORDINATOR)"
    ) in out
    assert "1 thing(s) to fix before a run" in out
