"""Numbers and versions read from a device are ASCII and bounded, in the harness and the twin:
Python's int() and regex \\d take other scripts' digits, and an unbounded version from a broken
device would be carried into every report."""

from __future__ import annotations

import re

import pytest

from hil.profile import load_profile
from hil.sim.at import AtSyntaxError, parse
from hil.sim.ota_receiver import OtaReceiver

PROFILE = load_profile()


@pytest.mark.parametrize(
    "text",
    ["STATUS:ONLINE:" + "1" * 32, "STATUS:ONLINE:", "STATUS:ONLINE:1.0 0"],
)
def test_an_online_message_with_no_sane_version_is_not_online(text: str) -> None:
    assert re.fullmatch(PROFILE.status.online, text) is None


def test_a_31_character_version_is_online() -> None:
    match = re.fullmatch(PROFILE.status.online, "STATUS:ONLINE:" + "v" * 31)
    assert match and match["version"] == "v" * 31


@pytest.mark.parametrize("uptime", ["\u0663", "\u00b2", "1" * 11])
def test_a_heartbeat_needs_ascii_digits(uptime: str) -> None:
    assert re.fullmatch(PROFILE.status.heartbeat, f"STATUS:HEARTBEAT:{uptime}") is None


@pytest.mark.parametrize("size", ["\u0663\u0660\u0660", "\u00b2", "9" * 40])
def test_the_twin_refuses_a_begin_size_that_is_not_an_ascii_number(size: str) -> None:
    step = OtaReceiver(PROFILE.ota, set()).handle(f"OTA:BEGIN:{size}".encode(), 0.0)
    assert step.replies == ["OTA:ERROR:size"]


@pytest.mark.parametrize("arg", ["\u0663", "9" * 5000])
def test_the_twin_modem_refuses_a_number_that_is_not_ascii(arg: str) -> None:
    with pytest.raises(AtSyntaxError):
        parse(f"AT+CMQTTPUB=0,{arg},60")
