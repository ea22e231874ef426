"""The emulated SIM7600 alone, driven over its UART against a broker that never acknowledges."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from hil.sim.atclient import AtClient, AtError, AtTimeout
from hil.sim.link import Link
from hil.sim.modem import Sim7600
from hil.sim.uart import uart_pair

TIME_SCALE = 0.01  # AT+CMQTTPUB=0,1,60 then times out after 0.6 s
AT_TIMEOUT_S = 1.0
RESULT_TIMEOUT_S = 5.0
REGISTER_S = 5.0
CONNACK = b"\x20\x02\x00\x00"


@contextlib.asynccontextmanager
async def silent_broker() -> AsyncIterator[tuple[int, asyncio.Queue[bytes]]]:
    """Accepts the MQTT CONNECT, then reads everything and acknowledges nothing."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(CONNACK)
        await writer.drain()
        while data := await reader.read(1024):
            received.put_nowait(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()


async def connected_modem(port: int) -> tuple[Sim7600, AtClient, list[asyncio.Task[None]]]:
    esp, modem_end = uart_pair()
    modem = Sim7600(modem_end, Link(), TIME_SCALE)
    at = AtClient(esp, lambda line: None, lambda topic, payload: None)
    tasks = [asyncio.create_task(modem.run()), asyncio.create_task(at.run())]
    await modem.set_power(True)

    async def cmd(line: str, data: bytes | None = None, wait_for: str | None = None) -> str:
        lines = await at.command(line, AT_TIMEOUT_S, data, wait_for, RESULT_TIMEOUT_S)
        return lines[-1] if lines else ""

    deadline = asyncio.get_running_loop().time() + REGISTER_S
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(AtTimeout):  # booting: the module hears nothing yet
            if await cmd("AT+CREG?") == "+CREG: 0,1":
                break
    else:
        raise AssertionError(f"modem not registered within {REGISTER_S} s")
    await cmd("ATE0")
    await cmd("AT+CMQTTSTART", wait_for="+CMQTTSTART:")
    await cmd('AT+CMQTTACCQ=0,"probe",0')
    await cmd('AT+CMQTTCFG="version",0,4')
    assert (
        await cmd(f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{port}",60,1', wait_for="+CMQTTCONNECT:")
        == "+CMQTTCONNECT: 0,0"
    )
    return modem, at, tasks


async def stop(modem: Sim7600, tasks: list[asyncio.Task[None]]) -> None:
    await modem.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_unacknowledged_publish_answers_timeout() -> None:
    async def scenario() -> None:
        async with silent_broker() as (port, _):
            modem, at, tasks = await connected_modem(port)
            try:
                await at.command("AT+CMQTTTOPIC=0,1", AT_TIMEOUT_S, b"t")
                lines = await at.command(
                    "AT+CMQTTPUB=0,1,60",
                    AT_TIMEOUT_S,
                    wait_for="+CMQTTPUB:",
                    result_timeout=RESULT_TIMEOUT_S,
                )
                assert lines[-1] == "+CMQTTPUB: 0,17"
            finally:
                await stop(modem, tasks)

    asyncio.run(scenario())


def test_publish_without_payload_sends_an_empty_one() -> None:
    async def scenario() -> None:
        async with silent_broker() as (port, received):
            modem, at, tasks = await connected_modem(port)
            try:
                try:
                    await at.command("AT+CMQTTPAYLOAD=0,0", AT_TIMEOUT_S)
                except AtError as exc:
                    assert "+CMQTTPAYLOAD: 0,22" in exc.lines  # 22: length out of range
                else:
                    raise AssertionError("AT+CMQTTPAYLOAD=0,0 was accepted")
                await at.command("AT+CMQTTTOPIC=0,1", AT_TIMEOUT_S, b"t")
                await at.command(
                    "AT+CMQTTPUB=0,0,60",
                    AT_TIMEOUT_S,
                    wait_for="+CMQTTPUB:",
                    result_timeout=RESULT_TIMEOUT_S,
                )
                packet = await asyncio.wait_for(received.get(), RESULT_TIMEOUT_S)
                assert packet == b"\x30\x03\x00\x01t"  # PUBLISH QoS 0, topic "t", no payload
            finally:
                await stop(modem, tasks)

    asyncio.run(scenario())
