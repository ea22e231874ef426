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
from tests.network.modem import mqtt_ready_modem

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
        self.pings = 0  # PINGREQs passed on while the link was alive

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
                if up:
                    self.pings += data.count(PINGREQ)
                else:
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


def lost(urcs: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(at, line) for at, line in urcs if line.startswith("+CMQTTCONNLOST:")]


async def test_pings_keep_a_quiet_link_up_and_a_dead_one_is_given_up(
    mosquitto: BrokerEndpoint,
) -> None:
    zone, urcs = DeadZone(), []
    async with zone.serve(mosquitto) as port, mqtt_ready_modem(urcs) as cmd:
        connect = f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{port}",{KEEPALIVE_S},1'
        assert await cmd(connect, wait_for="+CMQTTCONNECT:") == "+CMQTTCONNECT: 0,0"
        quiet_until = time.monotonic() + 3 * KEEPALIVE_S + SLACK_S  # nothing to say meanwhile
        while zone.pings < 2 and time.monotonic() < quiet_until:
            await asyncio.sleep(0.05)
        assert zone.pings >= 2, f"{zone.pings} PINGREQ in {3 * KEEPALIVE_S} s of quiet link"
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
