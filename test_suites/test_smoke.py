"""Smoke: the device is online and answers one encrypted echo."""

import pytest

pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]


async def test_device_reports_online(dut) -> None:
    version = await dut.current_version()
    assert version


async def test_device_echoes_test_message(dut) -> None:
    reply = await dut.echo("Test Message")
    assert reply.first.text == "Test Message"
    assert dut.cipher.decrypt_text(reply.second.text) == dut.profile.crypto.echo_prefix + "Test Message"
