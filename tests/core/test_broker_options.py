"""[broker] keys that would do nothing, or leak the password, stop the rig load and say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.rig import load_rig
from hil.schema import ConfigError

HEAD = """
[rig]
name = "t"
[console]
driver = "serial"
port = "/dev/ttyACM0"
[broker]
"""
EXTERNAL = 'driver = "external"\nhost = "broker.lab.example"\n'
PASSWORD = 'username = "hil"\npassword_env = "HIL_BROKER_PASSWORD"\n'


def load(tmp_path: Path, broker: str):
    """The rig with this [broker] table; ca.pem, client.pem and client.key exist beside it."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("")
    path = tmp_path / "rig.toml"
    path.write_text(HEAD + broker)
    return load_rig(path)


def refusal(tmp_path: Path, broker: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, broker)
    assert info.value.key == "broker" and str(tmp_path / "rig.toml") in str(info.value)
    return info.value.reason


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ('ca = "ca.pem"\n', "ca"),
        ('cert = "client.pem"\nkey = "client.key"\n', "cert, key"),
        ("insecure = true\n", "insecure"),
        ('ca = "ca.pem"\ninsecure = true\n', "ca, insecure"),
    ],
)
def test_tls_keys_with_tls_false_are_refused(tmp_path: Path, keys: str, named: str) -> None:
    reason = refusal(tmp_path, f"{EXTERNAL}tls = false\n{keys}")
    assert f"next to {named};" in reason
    assert f"set tls = true or remove {named}" in reason


def test_mosquitto_names_its_tls_keys_with_tls_false(tmp_path: Path) -> None:
    reason = refusal(tmp_path, 'driver = "mosquitto"\nrequire_certificate = true\n')
    assert "next to require_certificate;" in reason and "set tls = true" in reason


def test_insecure_next_to_ca_is_refused(tmp_path: Path) -> None:
    reason = refusal(tmp_path, f'{EXTERNAL}ca = "ca.pem"\ninsecure = true\n')
    assert "ca is never checked with insecure = true" in reason


def test_password_in_clear_to_another_host_is_refused(tmp_path: Path) -> None:
    reason = refusal(tmp_path, f"{EXTERNAL}tls = false\n{PASSWORD}")
    assert "broker.lab.example" in reason and "password_env" in reason
    assert "set tls = true" in reason and "plaintext_password = true" in reason


def test_password_in_clear_to_another_host_when_written(tmp_path: Path) -> None:
    rig = load(tmp_path, f"{EXTERNAL}tls = false\n{PASSWORD}plaintext_password = true\n")
    assert rig.broker.options.plaintext_password and not rig.broker.options.tls


def test_plaintext_password_with_tls_is_refused(tmp_path: Path) -> None:
    reason = refusal(tmp_path, f"{EXTERNAL}{PASSWORD}plaintext_password = true\n")
    assert "plaintext_password applies only with tls = false; remove it" in reason


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "::1"])
def test_password_in_clear_on_this_machine_is_allowed(tmp_path: Path, host: str) -> None:
    rig = load(tmp_path, f'driver = "external"\nhost = "{host}"\ntls = false\n{PASSWORD}')
    assert rig.broker.options.password_env == "HIL_BROKER_PASSWORD"


def test_tls_broker_with_its_keys_loads(tmp_path: Path) -> None:
    keys = 'ca = "ca.pem"\ncert = "client.pem"\nkey = "client.key"\n'
    rig = load(tmp_path, f"{EXTERNAL}{keys}{PASSWORD}")
    assert rig.broker.options.ca == str(tmp_path / "ca.pem")
