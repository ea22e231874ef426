"""`--firmware` and `--reflash` from outside: a firmware the device could not boot, or a rig
that cannot write it, stops the run at configuration, before any test and before any part of
the rig is switched; and `hil run` passes a build folder through as the option's value."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli.run import names_test_paths
from hil.firmware.install import unusable
from hil.firmware.source import read_source
from hil.rig import load_rig

from .conftest import make_build

pytest_plugins = ["pytester"]

# The rig's power switch is a command that leaves a mark: switching it at all would show.
RIG = """
[rig]
name = "cfg-rig"
[console]
driver = "serial"
port = "{port}"
[board_power]
driver = "command"
on = "touch {mark}"
off = "touch {mark}"
[broker]
driver = "embedded"
{extra}
"""
STRAP = '[boot_strap]\ndriver = "command"\non = "touch {mark}"\noff = "touch {mark}"\n'
NEVER = "import pytest\n\n@pytest.mark.hil\ndef test_never(dut):\n    raise AssertionError('ran')\n"


@pytest.fixture
def configure(pytester: pytest.Pytester, tmp_path: Path):
    """Run pytest with a rig file and the given options; (exit code, stderr, output)."""
    mark = tmp_path / "switched"

    def run(*args: str, extra: str = STRAP) -> tuple[int, str, str]:
        rig = pytester.path / "rig.toml"
        text = RIG.format(port=tmp_path / "console", mark=mark, extra=extra.format(mark=mark))
        rig.write_text(text)
        pytester.makepyfile(test_never=NEVER)
        result = pytester.runpytest_subprocess("--rig", str(rig), *args)
        assert not mark.exists(), "a power switch was driven before the run was refused"
        return result.ret, result.stderr.str(), result.stdout.str()

    return run


def test_a_firmware_that_does_not_exist_stops_the_run_with_one_line(configure, tmp_path) -> None:
    ret, err, out = configure("--firmware", str(tmp_path / "missing"))
    assert ret == pytest.ExitCode.USAGE_ERROR
    assert f"hil: --firmware: the firmware {tmp_path / 'missing'} does not exist" in err
    assert "ran" not in out


def test_a_rig_that_cannot_start_the_serial_loader_names_the_tables_to_add(
    configure, tmp_path
) -> None:
    build = make_build(tmp_path / "build")
    ret, err, _ = configure("--firmware", str(build), extra="")
    assert ret == pytest.ExitCode.USAGE_ERROR
    assert "cannot install build folder" in err
    assert "add [boot_strap]" in err and '[reset] driver = "esp-serial"' in err


def test_an_ota_install_too_big_for_the_partition_is_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build", size=40_000)
    rig_file = tmp_path / "rig.toml"
    extra = '[firmware]\nmethod = "ota"\n[profile.ota]\npartition_size = 32768\n'
    rig_file.write_text(RIG.format(port="/dev/null", mark=tmp_path / "m", extra=extra))
    rig = load_rig(rig_file)
    problem = unusable(rig, rig.firmware, read_source(build, "esp32s3"))
    assert problem is not None and "larger than the OTA partition (32768 bytes" in problem


def test_reflash_without_a_firmware_is_refused(configure) -> None:
    ret, err, _ = configure("--reflash")
    assert ret == pytest.ExitCode.USAGE_ERROR
    assert "--reflash needs a firmware to write" in err


def test_the_rig_files_image_is_verified_like_the_option(configure, tmp_path) -> None:
    (tmp_path / "app.bin").write_bytes(bytes(2048))
    extra = STRAP + f'[firmware]\nimage = "{tmp_path / "app.bin"}"\n'
    ret, err, _ = configure(extra=extra)
    assert ret == pytest.ExitCode.USAGE_ERROR
    assert "hil: [firmware] image of" in err and "app.bin is not an ESP32 image" in err


def test_hil_run_takes_a_build_folder_as_the_options_value(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    assert not names_test_paths(["--rig", "rigs/sim.toml", "--firmware", f"{build}/"])
    assert names_test_paths(["--rig", "rigs/sim.toml", "--firmware", str(build), "test_x.py"])
