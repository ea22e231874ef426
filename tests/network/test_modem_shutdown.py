"""The emulated SIM7600 stopping (the twin's SIGTERM or Ctrl-C) leaves no asyncio error behind:
not when its broker goes at the same moment (Ctrl-C reaches a mosquitto the twin started in its
own process group too), not when it stops in the middle of a CONNECT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import pytest

from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from tests.core.conftest import needs_mosquitto
from tests.network.modem import RESULT_TIMEOUT_S, mqtt_ready_modem

CLOSE_TIMEOUT_S = 5.0


def asyncio_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """asyncio's own error records once every dropped future was collected: a future whose
    exception nobody took is logged only then."""
    gc.collect()
    return [
        r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR
    ]


@needs_mosquitto
async def test_a_broker_gone_as_the_modem_stops_leaves_no_unretrieved_future(
    tmp_path, caplog
) -> None:
    broker = MosquittoBroker(MosquittoOptions(), tmp_path)
    endpoint = broker.start()
    caplog.set_level(logging.ERROR, logger="asyncio")
    try:
        async with mqtt_ready_modem([]) as cmd:
            connect = f'AT+CMQTTCONNECT=0,"tcp://{endpoint.host}:{endpoint.port}",60,1'
            assert await cmd(connect, wait_for="+CMQTTCONNECT:") == "+CMQTTCONNECT: 0,0"
            # Blocking, so the modem hears of it no sooner than it is told to stop (leaving the
            # context closes it), as when one Ctrl-C stops both.
            broker.stop()
    finally:
        broker.stop()
    assert asyncio_errors(caplog) == []


@contextlib.asynccontextmanager
async def silent_broker(heard: asyncio.Event, closed: asyncio.Event) -> AsyncIterator[int]:
    """Takes a CONNECT (`heard`) and never answers it; `closed` once the client closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                heard.set()
        closed.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_modem_stopped_mid_connect_closes_its_socket(caplog) -> None:
    heard, closed = asyncio.Event(), asyncio.Event()
    caplog.set_level(logging.ERROR, logger="asyncio")
    urcs: list[tuple[float, str]] = []
    async with silent_broker(heard, closed) as port:
        async with mqtt_ready_modem(urcs) as cmd:
            await cmd(
                f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{port}",60,1'
            )  # OK; the result comes later
            await asyncio.wait_for(heard.wait(), RESULT_TIMEOUT_S)
        await asyncio.wait_for(closed.wait(), CLOSE_TIMEOUT_S)
    assert not [line for _, line in urcs if line.startswith("+CMQTTCONNECT:")]
    assert asyncio_errors(caplog) == []
