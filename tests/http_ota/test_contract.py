"""The HTTP OTA contract as profile data: message templates both ways, the version rule, and
what a rig file may get wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.profile import load_profile
from hil.protocol import http_ota
from hil.rig import load_rig
from hil.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_every_template_reads_back_what_it_fills_in() -> None:
    contract = load_profile().http_ota
    samples = {
        "url": {"url": "http://10.0.0.5:8080"},
        "checking": {},
        "refused": {"running": "2.0.0", "offered": "1.9.9-rc1"},
        "downloading": {"received": "4096", "total": "20000"},
        "resumed": {"at": "8192"},
        "failed": {"reason": "verify"},
        "rollback": {"version": "3.0.0-bad"},
    }
    for name, fields in samples.items():
        template = getattr(contract, name)
        assert http_ota.match(template, http_ota.fill(template, **fields)) == fields, name


def test_reference_messages_are_the_documented_text() -> None:
    contract = load_profile().http_ota
    assert (
        http_ota.fill(contract.refused, running="2.0.0", offered="1.0.0")
        == "OTA:HTTP:REFUSED:not newer (2.0.0 >= 1.0.0)"
    )
    assert http_ota.fill(contract.url, url="http://h:1") == "OTA:URL:http://h:1"


@pytest.mark.parametrize(
    "text",
    [
        "OTA:HTTP:REFUSED:not newer 2.0.0 >= 1.0.0",  # the parentheses are literal
        "OTA:HTTP:REFUSED:not newer (2.0.0 > 1.0.0)",
        "OTA:HTTP:REFUSED:not newer (2.0.0 >= )",
        "xOTA:HTTP:REFUSED:not newer (2.0.0 >= 1.0.0)",
        "OTA:HTTP:REFUSED:not newer (2.0.0\n >= 1.0.0)",
    ],
)
def test_a_message_that_is_not_the_template_is_no_match(text: str) -> None:
    assert http_ota.match(load_profile().http_ota.refused, text) is None


@pytest.mark.parametrize(
    ("offered", "running", "newer"),
    [
        ("2.0.0", "1.0.0", True),
        ("1.10.0", "1.9.0", True),  # numbers, not text
        ("1.2", "1.1.9", True),
        ("1.2", "1.2.0", False),  # 1.2 is 1.2.0
        ("1.0.0", "1.0.0", False),
        ("1.0.0-b", "1.0.0-a", False),  # a tag never makes a version newer
        ("1.0.1-rc1", "1.0.0", True),
        ("0.9.9", "1.0.0", False),
        ("v2", "1.0.0", False),  # no numeric release: never newer
        ("2.0.0", "dev", True),
        ("٢.0.0", "1.0.0", False),  # ASCII digits only, as the firmware's parser
    ],
)
def test_the_version_rule(offered: str, running: str, newer: bool) -> None:
    assert http_ota.is_newer(offered, running) is newer


@pytest.mark.parametrize(
    ("table", "key", "says"),
    [
        ({"refused": "OTA:HTTP:REFUSED:{running}"}, "http_ota.refused", "{running}, {offered}"),
        ({"downloading": "D:{received}/{totl}"}, "http_ota.downloading", "{received}, {total}"),
        ({"checking": "OTA:{x}"}, "http_ota.checking", "no placeholder"),
        ({"failed": "F:{reason!r}"}, "http_ota.failed", "plain {name}"),
        ({"version_path": "version"}, "http_ota.version_path", "URL path"),
        ({"image_path": "/fw bin"}, "http_ota.image_path", "URL path"),
        ({"server_port": 70000}, "http_ota.server_port", "TCP port"),
        ({"download_s": 0}, "http_ota.download_s", "> 0"),
    ],
)
def test_a_bad_field_is_one_error_naming_it(table: dict, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile(overrides={"http_ota": table})
    assert caught.value.key == key
    assert says in str(caught.value)


def test_the_virtual_rig_has_the_capability_and_a_rig_can_turn_it_off(tmp_path: Path) -> None:
    assert "http_ota" in load_rig(ROOT / "rigs" / "sim.toml").capabilities
    text = (ROOT / "rigs" / "sim.toml").read_text()
    rig = tmp_path / "no-http.toml"
    rig.write_text(
        text.replace("[profile.ota]\n", "[profile.http_ota]\nenabled = false\n\n[profile.ota]\n")
    )
    assert "http_ota" not in load_rig(rig).capabilities
