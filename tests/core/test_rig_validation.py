"""Rig values that cannot work stop the load, all of them at once, and `hil rigs check` says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hil import profile, schema
from hil.cli import main
from hil.reset.command import CommandResetOptions
from hil.rig import load_rig
from hil.schema import ConfigError, ConfigErrors

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[rig]
name = "t"
[console]
driver = "serial"
port = "/dev/ttyACM0"
[power]
driver = "lcus"
port = "/dev/ttyUSB9"
[broker]
driver = "mosquitto"
"""
COMMAND_POWER = '[power]\ndriver = "command"\non = "relay on"\noff = "relay off"\n'
EXTERNAL = '[broker]\ndriver = "external"\nhost = "b.example"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str) -> list[ConfigError]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_rig(path)
    assert str(path) in str(info.value), "the message names the file"
    return list(getattr(info.value, "errors", [info.value]))


def rig_with(tmp_path: Path, section: str, lines: str) -> str:
    """GOOD with `lines` added under `[section]` (a new table when GOOD has none)."""
    if f"[{section}]\n" in GOOD:
        return GOOD.replace(f"[{section}]\n", f"[{section}]\n{lines}\n", 1)
    return f"{GOOD}[{section}]\n{lines}\n"


@pytest.mark.parametrize(
    ("section", "lines", "key", "words"),
    [
        ("limits", "boot_s = 0", "limits.boot_s", "got 0.0"),
        ("limits", "recovery_s = -5", "limits.recovery_s", "> 0"),
        ("limits", "echo_s = nan", "limits.echo_s", "nan"),
        ("limits", "detect_s = inf", "limits.detect_s", "finite"),
        ("limits", "ota_retries = -1", "limits.ota_retries", "got -1"),
        ("console", "baud = -9600", "console.baud", "got -9600"),
        ("console", "reappear_s = nan", "console.reappear_s", "finite"),
        ("power", "channel = 99", "power.channel", "channel must be 1 to 8"),
        ("power", "reappear_s = 0", "power.reappear_s", "> 0"),
        ("profile.mqtt", "qos = 7", "profile.mqtt.qos", "0 to 2"),
        ("profile.mqtt", "protocol_level = 6", "profile.mqtt.protocol_level", "3, 4 or 5"),
        ("profile.mqtt", "keepalive_s = 0", "profile.mqtt.keepalive_s", "got 0"),
        ("profile.mqtt", "status_topic = ''", "profile.mqtt.status_topic", "topic"),
        ("profile.ota", "chunk_data_size = -1", "profile.ota.chunk_data_size", "1 to 508"),
        ("profile.ota", "chunk_data_size = 509", "profile.ota.chunk_data_size", "1 to 508"),
        ("profile.ota", "partition_size = 0", "profile.ota.partition_size", "got 0"),
        ("profile.ota", "chunk_timeout_s = -1", "profile.ota.chunk_timeout_s", "> 0"),
        ("profile.firmware", "max_retries = 0", "profile.firmware.max_retries", ">= 1"),
        ("profile.firmware", "retry_delay_s = nan", "profile.firmware.retry_delay_s", "nan"),
        ("profile.crypto", "key = 'short'", "profile.crypto.key", "32 bytes"),
        ("profile.crypto", "max_plaintext = 0", "profile.crypto.max_plaintext", ">= 1"),
        ("profile.console", "baud = 0", "profile.console.baud", "a baud rate >= 1"),
        (
            "profile.status",
            r"online = '^STATUS:ONLINE:\S+$'",
            "profile.status.online",
            "(?P<version>",
        ),
        ("profile.status", r"heartbeat = '^HB$'", "profile.status.heartbeat", "(?P<uptime>"),
        ("profile.status", "online = '(unclosed'", "profile.status.online", "regular expression"),
        (
            "profile.console",
            "firmware_start = '^Firmware starting'",
            "profile.console.firmware_start",
            "(?P<version>",
        ),
        ("sim", "time_scale = nan", "sim.time_scale", "finite"),
        ("sim", "rtt_ms = -1", "sim.rtt_ms", ">= 0"),
        ("sim", "rtt_ms = inf", "sim.rtt_ms", "finite"),
    ],
)
def test_values_that_cannot_work_are_refused(tmp_path, section, lines, key, words) -> None:
    (err,) = errors_of(tmp_path, rig_with(tmp_path, section, lines))
    assert err.key == key
    assert words in err.reason


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        (COMMAND_POWER.replace('"relay on"', '""'), "power.on", "empty"),
        (COMMAND_POWER.replace('"relay off"', '"  "'), "power.off", "empty"),
        (COMMAND_POWER + "timeout_s = 0\n", "power.timeout_s", "> 0"),
        ('[power]\ndriver = "gpiod"\nchip = "/dev/gpiochip0"\nline = -1\n', "power.line", ">= 0"),
    ],
)
def test_power_and_reset_tables_are_checked(tmp_path, table, key, words) -> None:
    head, _, _ = GOOD.partition("[power]")
    (err,) = errors_of(tmp_path, f'{head}{table}[broker]\ndriver = "mosquitto"\n')
    assert err.key == key and words in err.reason


def test_reset_command_timeout_is_checked() -> None:
    # Through schema.load: no reset driver is registered as an entry point in this checkout.
    with pytest.raises(ConfigError) as info:
        schema.load(CommandResetOptions, {"command": "r", "timeout_s": 0.0}, "reset")
    assert info.value.key == "reset.timeout_s" and "> 0" in info.value.reason


@pytest.mark.parametrize(
    ("broker", "key", "words"),
    [
        (EXTERNAL.replace('"b.example"', '""'), "broker.host", "host name"),
        (EXTERNAL + "port = 99999\n", "broker.port", "1 to 65535"),
        (EXTERNAL + "port = 0\n", "broker.port", "1 to 65535"),
        (EXTERNAL + "connect_timeout_s = -1\n", "broker.connect_timeout_s", "> 0"),
        ('[broker]\ndriver = "mosquitto"\nport = 70000\n', "broker.port", "0 to 65535"),
        ('[broker]\ndriver = "embedded"\nstart_timeout_s = 0\n', "broker.start_timeout_s", "> 0"),
    ],
)
def test_broker_tables_are_checked(tmp_path, broker, key, words) -> None:
    head, _, _ = GOOD.partition("[broker]")
    (err,) = errors_of(tmp_path, head + broker)
    assert err.key == key and words in err.reason


def test_every_error_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        GOOD.replace("[rig]", "[rig]\ncolour = 1")
        .replace('port = "/dev/ttyACM0"', 'port = "/dev/ttyACM0"\nbaud = -9600\nreappear_s = 0')
        .replace('port = "/dev/ttyUSB9"', 'port = "/dev/ttyUSB9"\nchannel = 99')
        .replace('driver = "mosquitto"', 'driver = "mosquitto"\nport = 99999')
        + "[limits]\nboot_s = -1\necho_s = 'soon'\n[profile.mqtt]\nqos = 7\n[sim]\nrtt_ms = -1\n"
    )
    errors = errors_of(tmp_path, text)
    assert [e.key for e in errors] == [
        "rig.colour",
        "console.baud",
        "console.reappear_s",
        "power.channel",
        "broker.port",
        "profile.mqtt.qos",
        "limits.boot_s",
        "limits.echo_s",
        "sim.rtt_ms",
    ]
    path = tmp_path / "rig.toml"
    with pytest.raises(ConfigErrors) as info:
        load_rig(path)
    lines = str(info.value).splitlines()
    assert len(lines) == len(errors)
    assert all(line.startswith(f"{path}: [") for line in lines)
    assert info.value.key == "rig.colour", "the first problem stands for the lot"


def test_a_section_after_a_failed_one_is_still_checked(tmp_path: Path) -> None:
    text = GOOD.replace('driver = "lcus"', 'driver = "zigbee"') + "[limits]\nboot_s = 0\n"
    assert [e.key for e in errors_of(tmp_path, text)] == ["power.driver", "limits.boot_s"]


def test_missing_sections_and_bad_tables_are_reported_together(tmp_path: Path) -> None:
    text = 'limits = 3\n[rig]\nname = 5\n[broker]\ndriver = "mosquitto"\n'
    assert [e.key for e in errors_of(tmp_path, text)] == ["limits", "rig.name", "console"]


def test_a_non_utf8_rig_file_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "rig.toml"
    path.write_bytes(b'[rig]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_rig(path)
    assert str(path) in str(info.value)
    assert "not UTF-8" in str(info.value) and "byte 17" in str(info.value)


def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rig.toml"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    with pytest.raises(ConfigError, match=r"binary .*byte 7"):
        load_rig(path)


def test_an_unreadable_rig_file_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, GOOD)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # root reads any file, so fake the refusal
    with pytest.raises(ConfigError, match=r"cannot read .*Permission denied"):
        load_rig(path)


def test_a_directory_is_not_a_rig_file(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"is a directory.*rig\.toml"):
        load_rig(tmp_path)


@pytest.mark.parametrize("name", ["../profiles/reference", "reference.toml", "a b", "", 5])
def test_profile_name_is_a_plain_shipped_name(tmp_path: Path, name) -> None:
    value = f"'{name}'" if isinstance(name, str) else name
    (err,) = errors_of(tmp_path, f"{GOOD}[profile]\nname = {value}\n")
    assert err.key == "profile.name" and "reference" in err.reason


def test_profile_name_cannot_point_at_a_file(tmp_path: Path) -> None:
    shutil.copy(Path(profile.__file__).parent / "profiles" / "reference.toml", tmp_path / "p.toml")
    (err,) = errors_of(tmp_path, f"{GOOD}[profile]\nname = '{tmp_path / 'p'}'\n")
    assert err.key == "profile.name" and "letters, digits" in err.reason


def test_rigs_check_exits_0_for_the_virtual_rig(capsys) -> None:
    assert main(["rigs", "check", str(ROOT / "rigs" / "sim.toml")]) == 0
    assert "rig file OK" in capsys.readouterr().out


def test_rigs_check_exits_1_for_a_missing_port(tmp_path: Path, capsys) -> None:
    assert main(["rigs", "check", str(write(tmp_path, GOOD))]) == 1
    out = capsys.readouterr().out
    assert "/dev/ttyUSB9: NOT PRESENT" in out and "to fix before a run" in out


def test_rigs_check_exits_0_when_every_port_is_present(tmp_path: Path, capsys) -> None:
    for name in ("console", "relay"):
        (tmp_path / name).write_text("")
    text = GOOD.replace("/dev/ttyACM0", str(tmp_path / "console"))
    text = text.replace("/dev/ttyUSB9", str(tmp_path / "relay"))
    assert main(["rigs", "check", str(write(tmp_path, text))]) == 0


def test_rigs_check_exits_1_for_an_unset_password_variable(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("HIL_TEST_NO_SUCH_PW", raising=False)
    (tmp_path / "console").write_text("")
    head, _, _ = GOOD.partition("[power]")
    broker = (
        '[broker]\ndriver = "mosquitto"\nusername = "u"\npassword_env = "HIL_TEST_NO_SUCH_PW"\n'
    )
    text = head.replace("/dev/ttyACM0", str(tmp_path / "console")) + broker
    assert main(["rigs", "check", str(write(tmp_path, text))]) == 1
    assert "HIL_TEST_NO_SUCH_PW: NOT SET" in capsys.readouterr().out


def test_rigs_check_takes_a_pool_folder_and_reports_each_file(tmp_path: Path, capsys) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(ROOT / "rigs" / "sim.toml", pool / "a.toml")
    (pool / "b.toml").write_text(GOOD + "[limits]\nboot_s = 0\n")
    assert main(["rigs", "check", str(pool)]) == 1
    out, err = capsys.readouterr()
    assert f"from {pool / 'a.toml'}" in out and "rig file OK" in out
    assert str(pool / "b.toml") in err and "[limits.boot_s]" in err
    assert "2 rig files checked: 1 of them to fix" in out


def test_rigs_check_takes_several_files_and_exits_0_when_all_are_fit(tmp_path, capsys) -> None:
    shutil.copy(ROOT / "rigs" / "sim.toml", tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text(
        (ROOT / "rigs" / "sim.toml").read_text().replace('name = "virtual"', 'name = "virtual-b"')
    )
    assert main(["rigs", "check", str(tmp_path / "a.toml"), str(tmp_path / "b.toml")]) == 0
    out = capsys.readouterr().out
    assert out.count("rig file OK") == 2 and "2 rig files checked: all OK" in out


def test_rigs_check_refuses_two_rigs_of_one_name_as_a_pool_does(tmp_path, capsys) -> None:
    for name in ("a", "b"):
        shutil.copy(ROOT / "rigs" / "sim.toml", tmp_path / f"{name}.toml")
    assert main(["rigs", "check", str(tmp_path)]) == 1
    assert f"name 'virtual': {tmp_path / 'a.toml'} has it too" in capsys.readouterr().out


def test_rigs_check_names_an_empty_folder(tmp_path: Path, capsys) -> None:
    assert main(["rigs", "check", str(tmp_path)]) == 1
    assert "holds no *.toml rig file" in capsys.readouterr().err


def test_rigs_check_lines_end_without_a_space(capsys) -> None:
    assert main(["rigs", "check", str(ROOT / "rigs" / "sim.toml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  broker:  mosquitto" in lines
    assert [line for line in lines if line.endswith(" ")] == []


def test_rigs_check_lists_every_error_and_exits_1(tmp_path: Path, capsys) -> None:
    text = GOOD + "[limits]\nboot_s = 0\nreboot_s = -1\n"
    assert main(["rigs", "check", str(write(tmp_path, text))]) == 1
    err = capsys.readouterr().err
    assert "[limits.boot_s]" in err and "[limits.reboot_s]" in err
    assert "2 problems" in err
