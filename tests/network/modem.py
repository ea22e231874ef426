"""The emulated SIM7600 alone, driven over its UART as the firmware drives it, for tests of
what the module reports about its MQTT connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from hil.sim.atclient import AtClient, AtTimeout
from hil.sim.link import Link
from hil.sim.modem import Sim7600
from hil.sim.uart import uart_pair

TIME_SCALE = 0.01
AT_TIMEOUT_S = 1.0
RESULT_TIMEOUT_S = 10.0
REGISTER_S = 5.0

Command = Callable[..., Awaitable[str]]


@contextlib.asynccontextmanager
async def mqtt_ready_modem(urcs: list[tuple[float, str]]) -> AsyncIterator[Command]:
    """A registered modem with client 0 acquired for MQTT 3.1.1; yields `cmd(line,
    wait_for=None)` (the last line of the answer) and collects URCs with their times."""
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
        while not await _registered(cmd):
            assert time.monotonic() < deadline, f"modem not registered within {REGISTER_S} s"
        await cmd("ATE0")
        await cmd("AT+CMQTTSTART", wait_for="+CMQTTSTART:")
        await cmd('AT+CMQTTACCQ=0,"network-probe",0')
        await cmd('AT+CMQTTCFG="version",0,4')
        yield cmd
    finally:
        await modem.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _registered(cmd: Command) -> bool:
    with contextlib.suppress(AtTimeout):  # booting: the module hears nothing yet
        return await cmd("AT+CREG?") == "+CREG: 0,1"
    return False
