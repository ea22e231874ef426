"""Choosing the transport: one clear error for a bad value, a profile or a broker raw TCP cannot
serve, when the rig file is loaded (`hil rigs check`), before anything is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil import schema
from hil.broker import TlsFiles
from hil.cli import main as hil_main
from hil.cli.sim import main as sim_main
from hil.profile import load_profile
from hil.rig import load_rig
from hil.sim.options import SimOptions
from hil.sim.process import TwinProcess

ROOT = Path(__file__).resolve().parents[2]


def test_an_unknown_transport_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"transport must be one of cmqtt, raw-tcp, got 'udp'"):
        SimOptions(transport="udp")
    assert SimOptions().transport == "cmqtt"


def test_the_raw_tcp_rig_loads_with_its_transport(tmp_path: Path) -> None:
    rig = tmp_path / "sim-raw-tcp.toml"
    rig.write_text((ROOT / "rigs" / "sim-raw-tcp.toml").read_text())
    loaded = load_rig(rig)
    assert loaded.sim is not None
    assert loaded.sim.transport == "raw-tcp"
    assert loaded.sim.flash == tmp_path / ".state" / "sim-raw-tcp-flash.bin"

    rig.write_text(rig.read_text().replace('transport = "raw-tcp"', 'transport = "ppp"'))
    with pytest.raises(schema.ConfigError, match="transport"):
        load_rig(rig)


@pytest.mark.parametrize(
    ("mqtt", "why"),
    [
        ({"protocol_level": 5}, r"MQTT 3\.1 and 3\.1\.1; profile mqtt\.protocol_level 5 needs"),
        ({"qos": 2}, r"QoS 0 or 1; profile mqtt\.qos 2 needs"),
    ],
)
def test_a_profile_raw_tcp_cannot_serve_is_refused_before_the_twin_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mqtt: dict[str, int], why: str
) -> None:
    profile = load_profile(overrides={"mqtt": mqtt})
    twin = TwinProcess()
    with pytest.raises(ValueError, match=rf'\[sim\] transport "raw-tcp" .*{why}'):
        twin.start(tmp_path / "twin", "127.0.0.1:1", profile, SimOptions(transport="raw-tcp"))
    assert not (tmp_path / "twin").exists()

    path = tmp_path / "profile.json"
    path.write_text(json.dumps(schema.dump(profile)))
    assert sim_main(["--transport", "raw-tcp", "--profile", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, naming the setting


def test_a_tls_broker_is_refused_on_raw_tcp(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    twin = TwinProcess()
    with pytest.raises(ValueError, match=r'plain TCP; a TLS broker needs transport "cmqtt"'):
        twin.start(
            tmp_path / "twin",
            "127.0.0.1:1",
            load_profile(),
            SimOptions(transport="raw-tcp"),
            tls=TlsFiles(ca=ca),
        )
    assert not (tmp_path / "twin").exists()
    assert sim_main(["--transport", "raw-tcp", "--ca", str(ca)]) == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            ('driver = "auto"', 'driver = "mosquitto"\ntls = true'),
            'plain TCP; a TLS broker needs transport "cmqtt"',
        ),
        (
            ("keepalive_s = 2", "keepalive_s = 2\nprotocol_level = 5"),
            'profile mqtt.protocol_level 5 needs transport "cmqtt"',
        ),
        (("keepalive_s = 2", "keepalive_s = 2\nqos = 2"), 'mqtt.qos 2 needs transport "cmqtt"'),
    ],
)
def test_what_raw_tcp_cannot_serve_is_refused_by_the_rig_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], why: str
) -> None:
    rig = tmp_path / "sim-raw-tcp.toml"
    text = (ROOT / "rigs" / "sim-raw-tcp.toml").read_text()
    assert change[0] in text
    rig.write_text(text.replace(*change, 1))
    with pytest.raises(schema.ConfigError) as refused:
        load_rig(rig)
    assert refused.value.key == "sim.transport"
    assert len(refused.value.errors) == 1

    assert hil_main(["rigs", "check", str(rig)]) == 1
    out, err = capsys.readouterr()
    assert err == f"hil rigs check: {rig}: [sim.transport] {refused.value.reason}\n"
    assert why in err
    assert "rig file OK" not in out

    rig.write_text(rig.read_text().replace('transport = "raw-tcp"', 'transport = "cmqtt"'))
    fixed = load_rig(rig)  # the fix the error names is enough
    assert fixed.sim is not None and fixed.sim.transport == "cmqtt"
