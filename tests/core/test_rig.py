"""Rig files: every bad input stops with one message naming the file, the key and the fix."""

from pathlib import Path

import pytest

from hil.rig import load_rig
from hil.schema import ConfigError

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
normally_closed = true
[broker]
driver = "mosquitto"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_rig(write(tmp_path, text))
    assert str(tmp_path / "rig.toml") in str(info.value), "the message names the file"
    return info.value


@pytest.mark.parametrize("name", ["sim.toml", "bench-esp32s3-sim7600.toml"])
def test_shipped_rigs_are_valid(name: str) -> None:
    rig = load_rig(ROOT / "rigs" / name)
    assert rig.power is not None and rig.power_common.normally_closed
    assert rig.profile.mqtt.status_topic == "esp32_status"


def test_a_good_rig_loads(tmp_path: Path) -> None:
    rig = load_rig(write(tmp_path, GOOD))
    assert rig.name == "t"
    assert rig.console.options.port == "/dev/ttyACM0"
    assert rig.capabilities >= {"power", "console", "mqtt"}


def test_sim_rig_limits_and_overrides_reach_the_profile() -> None:
    rig = load_rig(ROOT / "rigs" / "sim.toml")
    assert rig.profile.limits.recovery_s == 20.0
    assert rig.profile.firmware.retry_delay_s == 0.25
    assert rig.profile.crypto.key == "0123456789ABCDEF0123456789ABCDEF"


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("[rig]", "[rig]\ncolour = 1"), "rig.colour", "unknown key"),
        (('port = "/dev/ttyACM0"', "port = 5"), "console.port", "expected a string"),
        (('driver = "lcus"', 'driver = "zigbee"'), "power.driver", "unknown power driver 'zigbee'"),
        (('driver = "mosquitto"', 'driver = "rabbit"'), "broker.driver", "installed: "),
        (("[broker]", "[brokers]\n[broker]"), "brokers", "unknown section"),
        (
            ("normally_closed = true", "normally_closed = 1"),
            "power.normally_closed",
            "true or false",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, change, key, words) -> None:
    err = error_of(tmp_path, GOOD.replace(*change, 1))
    assert err.key == key
    assert words in str(err)


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace('port = "/dev/ttyUSB9"', 'prot = "/dev/ttyUSB9"'))
    assert err.key == "power.prot"
    assert "port" in str(err) and "channel" in str(err)


def test_missing_required_driver_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace('port = "/dev/ttyUSB9"\n', ""))
    assert err.key == "power.port"
    assert "missing" in str(err)


def test_missing_console_table(tmp_path: Path) -> None:
    text = GOOD.replace('[console]\ndriver = "serial"\nport = "/dev/ttyACM0"\n', "")
    assert error_of(tmp_path, text).key == "console"


def test_console_needs_port_or_match_not_both(tmp_path: Path) -> None:
    text = GOOD.replace(
        'port = "/dev/ttyACM0"', 'port = "/dev/ttyACM0"\nmatch = { vendor_id = "303a" }'
    )
    err = error_of(tmp_path, text)
    assert err.key == "console" and "exactly one of port" in str(err)


def test_missing_tls_file_names_the_path(tmp_path: Path) -> None:
    text = GOOD.replace(
        'driver = "mosquitto"', 'driver = "external"\nhost = "b.example"\nca = "certs/ca.pem"'
    )
    err = error_of(tmp_path, text)
    assert err.key == "broker.ca"
    assert str(tmp_path / "certs" / "ca.pem") in str(err)


def test_tls_file_paths_are_relative_to_the_rig(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    text = GOOD.replace('driver = "mosquitto"', 'driver = "external"\nhost = "b"\nca = "ca.pem"')
    rig = load_rig(write(tmp_path, text))
    assert rig.broker.options.ca == str(tmp_path / "ca.pem")


def test_profile_override_with_unknown_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "[profile.mqtt]\nstatus_topik = 'x'\n")
    assert err.key == "profile.mqtt.status_topik"


def test_profile_override_with_bad_regex(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "[profile.console]\npanic = '(unclosed'\n")
    assert err.key == "profile.console.panic"
    assert "'(unclosed', expected a valid regular expression" in str(err)


def test_unknown_profile(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "[profile]\nname = 'nope'\n")
    assert err.key == "profile.name" and "reference" in str(err)


def test_limits_must_be_numbers(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "[limits]\nrecovery_s = 'soon'\n")
    assert err.key == "limits.recovery_s"


def test_unknown_sim_fault(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "[sim]\nfaults = ['echo_backwards']\n")
    assert err.key == "sim" and "echo_no_prefix" in str(err)


def test_sim_paths_need_a_sim_table(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace("/dev/ttyACM0", "{sim}/console"))
    assert err.key == "console" and "[sim]" in str(err)


def test_invalid_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in str(error_of(tmp_path, "[console\n"))


def test_missing_rig_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rig file not found"):
        load_rig(tmp_path / "absent.toml")
