"""The emulated SIM7600's MQTT keepalive against a real mosquitto, through a link that can go
dead without closing: PINGREQs keep a quiet link up, and a link that swallows everything is
given up within keepalive x 1.5 with `+CMQTTCONNLOST`, as the module reports a lost link."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from hil.broker import BrokerEndpoint
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.sim.atclient import AtClient, AtTimeout
from hil.sim.link import Link
from hil.sim.modem import Sim7600
from hil.sim.uart import uart_pair

TIME_SCALE = 0.01
AT_TIMEOUT_S = 1.0
RESULT_TIMEOUT_S = 10.0
REGISTER_S = 5.0
KEEPALIVE_S = 2
PINGREQ = b"\xc0\x00"
SLACK_S = 0.5  # the module's check interval and a loaded runner's scheduling, on top


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerEndpoint]:
    broker = MosquittoBroker(MosquittoOptions(), tmp_path_factory.mktemp("mosquitto"))
    endpoint = broker.start()
    yield endpoint
    broker.stop()


class DeadZone:
    """A TCP relay to the broker that can stop passing bytes either way without closing."""

    def __init__(self) -> None:
        self.dead = False
        self.up = bytearray()  # what the modem sent while the link was dead
        self.last_down = 0.0  # when bytes from the broker last reached the modem

    @contextlib.asynccontextmanager
    async def serve(self, broker: BrokerEndpoint) -> AsyncIterator[int]:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool):
            while data := await reader.read(4096):
                if self.dead:
                    if up:
                        self.up += data
                    continue
                writer.write(data)
                await writer.drain()
                if not up:
                    self.last_down = time.monotonic()
            writer.close()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            b_reader, b_writer = await asyncio.open_connection(broker.host, broker.port)
            await asyncio.gather(
                pipe(reader, b_writer, True), pipe(b_reader, writer, False), return_exceptions=True
            )

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()


@contextlib.asynccontextmanager
async def connected_modem(port: int, urcs: list[tuple[float, str]]) -> AsyncIterator[None]:
    """A registered modem whose client 0 is connected with KEEPALIVE_S; URCs with their times."""
    esp, modem_end = uart_pair()
    modem = Sim7600(modem_end, Link(), TIME_SCALE)
    at = AtClient(esp, lambda line: urcs.append((time.monotonic(), line)), lambda t, p: None)
    tasks = [asyncio.create_task(modem.run()), asyncio.create_task(at.run())]
    await modem.set_power(True)

    async def cmd(line: str, wait_for: str | None = None) -> str:
        lines = await at.command(line, AT_TIMEOUT_S, None, wait_for, RESULT_TIMEOUT_S)
        return lines[-1] if lines else ""

    try:
        deadline = time.monotonic() + REGISTER_S
        while await _registered(cmd) is False:
            assert time.monotonic() < deadline, f"modem not registered within {REGISTER_S} s"
        await cmd("ATE0")
        await cmd("AT+CMQTTSTART", wait_for="+CMQTTSTART:")
        await cmd('AT+CMQTTACCQ=0,"keepalive-probe",0')
        await cmd('AT+CMQTTCFG="version",0,4')
        connect = f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{port}",{KEEPALIVE_S},1'
        assert await cmd(connect, wait_for="+CMQTTCONNECT:") == "+CMQTTCONNECT: 0,0"
        yield
    finally:
        await modem.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _registered(cmd) -> bool:
    with contextlib.suppress(AtTimeout):  # booting: the module hears nothing yet
        return await cmd("AT+CREG?") == "+CREG: 0,1"
    return False


def lost(urcs: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(at, line) for at, line in urcs if line.startswith("+CMQTTCONNLOST:")]


async def test_pings_keep_a_quiet_link_up_and_a_dead_one_is_given_up(
    mosquitto: BrokerEndpoint,
) -> None:
    zone, urcs = DeadZone(), []
    async with zone.serve(mosquitto) as port, connected_modem(port, urcs):
        await asyncio.sleep(2 * KEEPALIVE_S)  # two keepalives with nothing to say
        assert not lost(urcs), f"a live link was given up: {lost(urcs)}"
        zone.dead = True
        went_dead = time.monotonic()
        limit = 1.5 * KEEPALIVE_S + SLACK_S
        while not lost(urcs) and time.monotonic() < went_dead + limit + KEEPALIVE_S:
            await asyncio.sleep(0.05)
        found = lost(urcs)
        assert found, f"no +CMQTTCONNLOST within {limit + KEEPALIVE_S} s of the link going dead"
        at, line = found[0]
        assert line == "+CMQTTCONNLOST: 0,1"
        assert PINGREQ in zone.up, "the module gave up without pinging the broker first"
        silent = at - zone.last_down
        assert silent <= limit, (
            f"given up {silent:.2f} s after the broker was last heard; the keepalive allows "
            f"{1.5 * KEEPALIVE_S} s"
        )
