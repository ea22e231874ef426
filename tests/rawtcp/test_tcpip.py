"""The twin's SIM7000-style TCP commands (hil.sim.tcpip), byte for byte on its UART.

The expected answers are those of SIMCom's SIM7000 Series AT Command Manual V1.03, chapter 8:
`SHUT OK`, the bare address for AT+CIFSR, `OK` then `CONNECT OK`, `>` then `SEND OK` or
`DATA ACCEPT:<n>`, `+CIPRXGET: 1` then `+CIPRXGET: 2,<read>,<left>` and the bytes, `+IPD,<n>:`
with AT+CIPHEAD=1, `CLOSED`, `CLOSE OK`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hil.sim.link import Link
from hil.sim.modem import IP_ADDRESS
from hil.sim.tcpip import TcpModem
from hil.sim.uart import UartEnd, uart_pair

TIME_SCALE = 0.01
TIMEOUT_S = 5.0
SILENCE_S = 0.5  # how long a socket must stay open, unread, after the modem lost power


class Host:
    """The ESP32's end of the UART, reading exactly what the modem writes."""

    def __init__(self, uart: UartEnd) -> None:
        self.uart = uart
        self.buffer = bytearray()

    async def expect(self, wanted: bytes) -> None:
        """The next bytes are `wanted`, exactly."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S
        while len(self.buffer) < len(wanted):
            left = deadline - loop.time()
            assert left > 0, f"waited for {wanted!r}, got {bytes(self.buffer)!r}"
            try:
                self.buffer += await asyncio.wait_for(self.uart.read(), left)
            except TimeoutError:
                continue
        got = bytes(self.buffer[: len(wanted)])
        del self.buffer[: len(wanted)]
        assert got == wanted

    async def command(self, line: str, *answer: str) -> None:
        self.uart.write(line.encode() + b"\r")
        for text in answer:
            await self.expect(b"\r\n" + text.encode() + b"\r\n")


class Server:
    """The broker's side of the socket: what it received, and a way to answer."""

    def __init__(self) -> None:
        self.connected: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def start(self) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connected.put_nowait((reader, writer))

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def accepted(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.connected.get(), TIMEOUT_S)


async def registered(host: Host, modem: TcpModem) -> None:
    await modem.set_power(True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while not modem.registered:
        assert loop.time() < deadline, "modem not registered"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the boot lines' wire time
    host.uart.discard_input()
    host.buffer.clear()
    host.uart.write(b"ATE0\r")
    await host.expect(b"ATE0\r\n\r\nOK\r\n")  # echoed before it takes effect


def scenario(body: Callable[[Host, TcpModem, Server, int], Awaitable[None]]) -> None:
    async def run() -> None:
        esp, modem_end = uart_pair()
        modem = TcpModem(modem_end, Link(), TIME_SCALE)
        task = asyncio.create_task(modem.run())
        server = Server()
        port = await server.start()
        host = Host(esp)
        try:
            await registered(host, modem)
            await body(host, modem, server, port)
        finally:
            await modem.close()
            task.cancel()
            server.server.close()

    asyncio.run(run())


async def bearer(host: Host) -> None:
    await host.command("AT+CIPSHUT", "SHUT OK")
    await host.command("AT+CIPMUX=0", "OK")
    await host.command('AT+CSTT="internet"', "OK")
    await host.command("AT+CIICR", "OK")
    await host.command("AT+CIFSR", IP_ADDRESS)
    await host.command("AT+CIPSTATUS", "OK", "STATE: IP STATUS")


def test_connect_send_read_and_server_close() -> None:
    async def body(host: Host, modem: TcpModem, server: Server, port: int) -> None:
        await bearer(host)
        await host.command("AT+CIPRXGET=1", "OK")
        await host.command(f'AT+CIPSTART="TCP","127.0.0.1",{port}', "OK", "CONNECT OK")
        reader, writer = await server.accepted()
        await host.command("AT+CIPSTATUS", "OK", "STATE: CONNECT OK")

        host.uart.write(b"AT+CIPSEND=6\r")
        await host.expect(b"\r\n>")
        host.uart.write(b"\x10\x1a\x00\r\n>")  # binary: Ctrl-Z, NUL, CR LF, '>'
        await host.expect(b"\r\nSEND OK\r\n")
        assert await asyncio.wait_for(reader.readexactly(6), TIMEOUT_S) == b"\x10\x1a\x00\r\n>"

        await host.command("AT+CIPQSEND=1", "OK")
        host.uart.write(b"AT+CIPSEND=3\r")
        await host.expect(b"\r\n>")
        host.uart.write(b"abc")
        await host.expect(b"\r\nDATA ACCEPT:3\r\n")
        assert await asyncio.wait_for(reader.readexactly(3), TIMEOUT_S) == b"abc"

        writer.write(b"\x20\x02\x00\x00")
        await writer.drain()
        await host.expect(b"\r\n+CIPRXGET: 1\r\n")
        await host.command("AT+CIPRXGET=4", "+CIPRXGET: 4,4", "OK")
        await host.command("AT+CIPRXGET=2,3", "+CIPRXGET: 2,3,1")
        await host.expect(b"\x20\x02\x00\r\nOK\r\n")
        await host.command("AT+CIPRXGET=2,1460", "+CIPRXGET: 2,1,0")
        await host.expect(b"\x00\r\nOK\r\n")

        writer.close()
        await host.expect(b"\r\nCLOSED\r\n")
        await host.command("AT+CIPSTATUS", "OK", "STATE: TCP CLOSED")
        await host.command("AT+CIPSEND=1", "ERROR")

    scenario(body)


def test_pushed_data_with_ipd_header_and_local_close() -> None:
    async def body(host: Host, modem: TcpModem, server: Server, port: int) -> None:
        await bearer(host)
        await host.command("AT+CIPHEAD=1", "OK")
        await host.command(f'AT+CIPSTART="TCP","127.0.0.1","{port}"', "OK", "CONNECT OK")
        await host.command(f'AT+CIPSTART="TCP","127.0.0.1",{port}', "OK", "ALREADY CONNECT")
        reader, writer = await server.accepted()
        writer.write(b"\xd0\x00")
        await writer.drain()
        await host.expect(b"\r\n+IPD,2:\xd0\x00")
        await host.command("AT+CIPCLOSE", "CLOSE OK")
        assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""  # a FIN
        await host.command("AT+CIPCLOSE", "ERROR")

    scenario(body)


def test_connect_to_nothing_fails_with_its_state() -> None:
    async def body(host: Host, modem: TcpModem, server: Server, port: int) -> None:
        await bearer(host)
        server.server.close()
        await server.server.wait_closed()
        await host.command(
            f'AT+CIPSTART="TCP","127.0.0.1",{port}', "OK", "STATE: TCP CLOSED", "CONNECT FAIL"
        )

    scenario(body)


def test_a_power_cut_sends_no_fin_and_forgets_the_connection() -> None:
    async def body(host: Host, modem: TcpModem, server: Server, port: int) -> None:
        await bearer(host)
        await host.command(f'AT+CIPSTART="TCP","127.0.0.1",{port}', "OK", "CONNECT OK")
        reader, writer = await server.accepted()
        await modem.set_power(False)
        read = asyncio.ensure_future(reader.read())
        done, _ = await asyncio.wait({read}, timeout=SILENCE_S)
        assert not done, "the server saw the connection end although the modem lost power"
        writer.write(b"\x30\x03\x00\x01a")  # taken by the socket, read by no one
        await writer.drain()

        await registered(host, modem)
        await host.command("AT+CIPSTATUS", "OK", "STATE: IP INITIAL")
        await host.command("AT+CIPSEND=1", "ERROR")
        await modem.close()  # the twin stops: held sockets go too
        assert await asyncio.wait_for(read, TIMEOUT_S) == b""

    scenario(body)
