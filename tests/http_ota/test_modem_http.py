"""The emulated SIM7600's HTTP commands alone, over its UART, against the suites' image server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hil.ota.http_server import ImageServer
from hil.protocol.image import build_image
from hil.sim.atclient import AtClient, AtError, AtTimeout
from hil.sim.link import Link
from hil.sim.modem import Sim7600
from hil.sim.uart import uart_pair

TIME_SCALE = 0.01
AT_TIMEOUT_S = 1.0
RESULT_TIMEOUT_S = 5.0
REGISTER_S = 5.0
IMAGE = build_image("2.0.0", 6000, project="modem-http")

Command = Callable[..., Awaitable[list[str]]]


@contextlib.asynccontextmanager
async def modem_online() -> AsyncIterator[Command]:
    """A registered modem with its data bearer open; yields `cmd(line, ...)` -> answer lines."""
    esp, modem_end = uart_pair()
    modem = Sim7600(modem_end, Link(), TIME_SCALE)
    at = AtClient(esp, lambda line: None, lambda topic, payload: None)
    tasks = [asyncio.create_task(modem.run()), asyncio.create_task(at.run())]
    await modem.set_power(True)

    async def cmd(
        line: str,
        wait_for: str | None = None,
        received: bytearray | None = None,
        data: bytes | None = None,
    ):
        return await at.command(
            line,
            AT_TIMEOUT_S,
            data=data,
            wait_for=wait_for,
            result_timeout=RESULT_TIMEOUT_S,
            received=received,
        )

    try:
        deadline = asyncio.get_running_loop().time() + REGISTER_S
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(AtTimeout):  # booting: the module hears nothing yet
                if (await cmd("AT+CREG?"))[-1] == "+CREG: 0,1":
                    break
        else:
            raise AssertionError(f"modem not registered within {REGISTER_S} s")
        await cmd("ATE0")
        assert (await cmd("AT+NETOPEN", wait_for="+NETOPEN:"))[-1] == "+NETOPEN: 0"
        yield cmd
    finally:
        await modem.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_body(cmd: Command, length: int, piece: int = 1000) -> bytes:
    body = bytearray()
    for offset in range(0, length, piece):
        lines = await cmd(
            f"AT+HTTPREAD={offset},{min(piece, length - offset)}",
            wait_for="+HTTPREAD: 0",
            received=body,
        )
        assert lines[-1] == "+HTTPREAD: 0"
    return bytes(body)


def test_get_reads_the_whole_body_and_its_headers() -> None:
    async def scenario() -> None:
        with ImageServer(IMAGE) as server:
            async with modem_online() as cmd:
                await cmd("AT+HTTPINIT")
                await cmd(f'AT+HTTPPARA="URL","{server.image_url}"')
                result = await cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:")
                assert result[-1] == f"+HTTPACTION: 0,200,{len(IMAGE)}"
                assert await cmd("AT+HTTPREAD?") == [f"+HTTPREAD: LEN,{len(IMAGE)}"]
                body = await read_body(cmd, len(IMAGE))
                assert hashlib.sha256(body).digest() == hashlib.sha256(IMAGE).digest()
                header = bytearray()
                await cmd("AT+HTTPHEAD", received=header)
                assert header.startswith(b"HTTP/1.1 200 OK\r\n")
                assert b"Accept-Ranges: bytes\r\n" in header
                await cmd("AT+HTTPTERM")

    asyncio.run(scenario())


def test_userdata_range_header_gets_partial_content() -> None:
    async def scenario() -> None:
        with ImageServer(IMAGE) as server:
            async with modem_online() as cmd:
                await cmd("AT+HTTPINIT")
                await cmd(f'AT+HTTPPARA="URL","{server.image_url}"')
                await cmd('AT+HTTPPARA="USERDATA","Range: bytes=4096-4999"')
                result = await cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:")
                assert result[-1] == "+HTTPACTION: 0,206,904"
                assert await read_body(cmd, 904, piece=300) == IMAGE[4096:5000]
                header = bytearray()
                await cmd("AT+HTTPHEAD", received=header)
                assert f"Content-Range: bytes 4096-4999/{len(IMAGE)}\r\n".encode() in header
        assert [r.range for r in server.requests] == ["bytes=4096-4999"]

    asyncio.run(scenario())


def test_a_cut_connection_is_a_network_error() -> None:
    async def scenario() -> None:
        with ImageServer(IMAGE) as server:
            server.cut_at(3000)
            async with modem_online() as cmd:
                await cmd("AT+HTTPINIT")
                await cmd(f'AT+HTTPPARA="URL","{server.image_url}"')
                result = await cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:")
                assert result[-1] == "+HTTPACTION: 0,601,0"  # 601: network error
                result = await cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:")
                assert result[-1] == f"+HTTPACTION: 0,200,{len(IMAGE)}", "the cut is once only"
        assert [r.sent for r in server.requests] == [3000, len(IMAGE)]

    asyncio.run(scenario())


def test_status_of_a_missing_path_and_a_dead_server() -> None:
    async def scenario() -> None:
        with ImageServer(IMAGE) as server:
            async with modem_online() as cmd:
                await cmd("AT+HTTPINIT")
                await cmd(f'AT+HTTPPARA="URL","{server.url}/nothing"')
                result = await cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:")
                assert result[-1].startswith("+HTTPACTION: 0,404,")
                port = server.port
                server.stop()
                await cmd(f'AT+HTTPPARA="URL","http://127.0.0.1:{port}/firmware.bin"')
                result = await cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:")
                assert result[-1] == "+HTTPACTION: 0,601,0"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "line",
    [
        'AT+HTTPPARA="URL","http://127.0.0.1/x"',  # before AT+HTTPINIT
        "AT+HTTPTERM",  # not started
        "AT+HTTPREAD=0,10",  # nothing read yet
    ],
)
def test_commands_out_of_order_answer_error(line: str) -> None:
    async def scenario() -> None:
        async with modem_online() as cmd:
            with pytest.raises(AtError):
                await cmd(line)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "line",
    [
        "AT+HTTPINIT",  # already started
        'AT+HTTPPARA="URL","ftp://127.0.0.1/firmware.bin"',  # neither http:// nor https://
        'AT+HTTPPARA="SSLCFG",10',  # SSL contexts are 0 to 9
        'AT+HTTPPARA="SSLCFG","one"',
    ],
)
def test_a_second_httpinit_and_bad_parameters_answer_error(line: str) -> None:
    async def scenario() -> None:
        async with modem_online() as cmd:
            await cmd("AT+HTTPINIT")
            with pytest.raises(AtError):
                await cmd(line)
            await cmd('AT+HTTPPARA="SSLCFG","3"')  # quoted or not, as TinyGsmHttpsComm.h sends
            await cmd('AT+HTTPPARA="URL","https://127.0.0.1/firmware.bin"')

    asyncio.run(scenario())
