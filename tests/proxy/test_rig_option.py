"""`[broker] proxy = true` and `proxy_listen`: common to every broker driver, checked at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.proxy.options import LOOPBACK
from hil.rig import load_rig
from hil.schema import ConfigError, ConfigErrors

RIG = """
[rig]
name = "t"
[console]
driver = "serial"
port = "/dev/ttyACM0"
[broker]
driver = "{driver}"
{broker}
"""
EXTERNAL = 'host = "b.example"\ntls = false\n'


def load(tmp_path: Path, broker: str, driver: str = "mosquitto"):
    path = tmp_path / "rig.toml"
    path.write_text(RIG.format(driver=driver, broker=broker))
    return load_rig(path)


@pytest.mark.parametrize(
    ("driver", "own"), [("mosquitto", ""), ("external", EXTERNAL), ("embedded", "")]
)
def test_proxy_is_a_key_of_every_broker_driver(tmp_path: Path, driver: str, own: str) -> None:
    rig = load(tmp_path, own + "proxy = true\n", driver)
    assert rig.proxy is not None and rig.proxy.listen == LOOPBACK
    assert "proxy" in rig.capabilities
    assert any("proxy" in line for line in rig.summary())


def test_without_proxy_the_rig_has_none(tmp_path: Path) -> None:
    rig = load(tmp_path, "")
    assert rig.proxy is None and "proxy" not in rig.capabilities


def test_proxy_listen_names_the_address_a_hardware_device_is_given(tmp_path: Path) -> None:
    rig = load(tmp_path, 'proxy = true\nproxy_listen = "0.0.0.0:18830"\n')
    assert rig.proxy.listen == ("0.0.0.0", 18830)
    assert load(tmp_path, 'proxy = true\nproxy_listen = "[::1]:1883"\n').proxy.listen == (
        "::1",
        1883,
    )


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ('proxy = "yes"', "expected true or false"),
        ('proxy_listen = "0.0.0.0:18830"', "applies only with proxy = true"),
        ('proxy = true\nproxy_listen = "18830"', '"host:port"'),
        ('proxy = true\nproxy_listen = "h:port"', "port number"),
        ('proxy = true\nproxy_listen = "h:70000"', "70000"),
    ],
)
def test_a_bad_proxy_key_is_one_error_naming_it(tmp_path: Path, keys: str, problem: str) -> None:
    with pytest.raises((ConfigError, ConfigErrors)) as caught:
        load(tmp_path, keys + "\n")
    text = str(caught.value)
    assert "broker.proxy" in text and problem in text
