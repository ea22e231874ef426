"""What the emulated SIM7600 answers when a broker refuses its CONNECT: the module's own
"refused" error codes (27-31, modem_facts.md), never a socket failure, and the client may
connect again at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.network.modem import mqtt_ready_modem

# CONNACK (MQTT 3.1.1 section 3.2): type 2, remaining length 2, no session, return code. Return
# code 1 (protocol version) is not here: paho, under the twin's modem, retries as MQTT 3.1.
REFUSALS = {2: 28, 3: 29, 4: 30, 5: 31}


@contextlib.asynccontextmanager
async def refusing_broker(codes: list[int]) -> AsyncIterator[int]:
    """Answers each CONNECT with the next return code of `codes` (0 when they are used up)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(bytes([0x20, 0x02, 0x00, codes.pop(0) if codes else 0]))
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # held until the client goes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("return_code", sorted(REFUSALS))
async def test_refused_connect_reports_the_refusal_and_the_next_one_connects(
    return_code: int,
) -> None:
    urcs: list[tuple[float, str]] = []
    async with refusing_broker([return_code]) as port, mqtt_ready_modem(urcs) as cmd:
        connect = f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{port}",60,1'
        refused = await cmd(connect, wait_for="+CMQTTCONNECT:")
        assert refused == f"+CMQTTCONNECT: 0,{REFUSALS[return_code]}"
        assert await cmd(connect, wait_for="+CMQTTCONNECT:") == "+CMQTTCONNECT: 0,0"
