"""The modem's TLS against real servers: mosquitto over TLS and `openssl s_server`, on
certificates made per test, the emulated SIM7600 driven over its UART as firmware drives it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint, free_port
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.broker.tls import BrokerPki
from hil.sim.atclient import AtClient, AtError, AtTimeout
from hil.sim.link import Link
from hil.sim.modem import Sim7600
from hil.sim.uart import uart_pair

HOST = "localhost"  # a name: a ClientHello carries no address as SNI
TIME_SCALE = 0.01
AT_TIMEOUT_S = 1.0
RESULT_TIMEOUT_S = 8.0
REGISTER_S = 5.0
needs_openssl_and_mosquitto = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("mosquitto", path="/usr/bin:/usr/sbin")),
    reason="needs openssl and mosquitto (apt-get install openssl mosquitto)",
)


@pytest.fixture
def pki(tmp_path: Path) -> BrokerPki:
    """A CA with the broker's pair for localhost, the harness's pair and the device's."""
    return BrokerPki.create(tmp_path / "pki", client=True, device=True)


@pytest.fixture
def foreign(tmp_path: Path) -> BrokerPki:
    """A CA the device was never given, and its server pair for localhost."""
    return BrokerPki.create(tmp_path / "foreign")


def spawn(tmp_path: Path, **options) -> Iterator[tuple[MosquittoBroker, BrokerEndpoint]]:
    broker = MosquittoBroker(MosquittoOptions(host=HOST, tls=True, **options), tmp_path / "broker")
    endpoint = broker.start()
    try:
        yield broker, endpoint
    finally:
        broker.stop()


@pytest.fixture
def mutual(tmp_path: Path, pki: BrokerPki) -> Iterator[tuple[MosquittoBroker, BrokerEndpoint]]:
    """Mosquitto accepting only clients with a certificate from `pki`'s CA."""
    assert pki.client is not None
    yield from spawn(
        tmp_path,
        cafile=str(pki.ca),
        certfile=str(pki.server.cert),
        keyfile=str(pki.server.key),
        require_certificate=True,
        cert=str(pki.client.cert),
        key=str(pki.client.key),
    )


class Modem:
    """A powered, registered SIM7600 with its MQTT service started; `cmd` is one AT command."""

    def __init__(self) -> None:
        esp, modem_end = uart_pair()
        self.modem = Sim7600(modem_end, Link(), TIME_SCALE)
        self.at = AtClient(esp, lambda line: None, lambda topic, payload: None)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.modem.run()), asyncio.create_task(self.at.run())]
        await self.modem.set_power(True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTER_S
        while loop.time() < deadline:
            with contextlib.suppress(AtTimeout):  # booting: the module hears nothing yet
                if await self.cmd("AT+CREG?") == "+CREG: 0,1":
                    break
        else:
            raise AssertionError(f"modem not registered within {REGISTER_S} s")
        await self.cmd("ATE0")
        await self.cmd("AT+CMQTTSTART", wait_for="+CMQTTSTART:")

    async def cmd(self, line: str, data: bytes | None = None, wait_for: str | None = None) -> str:
        """The command's last answer line: its result when `wait_for` names one."""
        lines = await self.at.command(line, AT_TIMEOUT_S, data, wait_for, RESULT_TIMEOUT_S)
        return lines[-1] if lines else ""

    async def error(self, line: str) -> list[str]:
        """The lines before ERROR of a command the module must refuse."""
        with pytest.raises(AtError) as refused:
            await self.cmd(line)
        return refused.value.lines

    async def download(self, name: str, path: Path) -> None:
        pem = path.read_bytes()
        await self.cmd(f'AT+CCERTDOWN="{name}",{len(pem)}', data=pem)

    async def configure(self, *settings: str) -> None:
        for setting in settings:
            await self.cmd(f"AT+CSSLCFG={setting}")

    async def connect(self, port: int, server_type: int = 1, host: str = HOST) -> str:
        """Acquire client 0 (1: SSL/TLS), MQTT 3.1.1, context 0; the +CMQTTCONNECT result."""
        await self.cmd(f'AT+CMQTTACCQ=0,"probe",{server_type}')
        await self.cmd('AT+CMQTTCFG="version",0,4')
        await self.cmd("AT+CMQTTSSLCFG=0,0")
        return await self.cmd(
            f'AT+CMQTTCONNECT=0,"tcp://{host}:{port}",60,1', wait_for="+CMQTTCONNECT:"
        )

    async def close(self) -> None:
        await self.modem.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def modem(pki: BrokerPki) -> AsyncIterator[Modem]:
    """The modem holding the CA and the device's pair as ca.pem, cert.pem and key.pem."""
    device = Modem()
    await device.start()
    assert pki.device is not None
    try:
        for name, path in (
            ("ca.pem", pki.ca),
            ("cert.pem", pki.device.cert),
            ("key.pem", pki.device.key),
        ):
            await device.download(name, path)
        yield device
    finally:
        await device.close()


# AT+CSSLCFG settings of context 0 for mutual TLS with the files `modem` downloaded.
MUTUAL = (
    '"authmode",0,2',
    '"cacert",0,"ca.pem"',
    '"clientcert",0,"cert.pem"',
    '"clientkey",0,"key.pem"',
)


class SServer:
    """`openssl s_server` on a free port, printing each ClientHello's extensions
    (-tlsextdebug) and the client's certificate (-verify: asked for, not required)."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.port = free_port()
        self.argv = [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{self.port}",
            "-cert",
            str(cert),
            "-key",
            str(key),
            "-CAfile",
            str(ca),
            "-verify",
            "1",
            "-tlsextdebug",
            "-naccept",
            "1",
        ]
        self.output = b""
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SServer:
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=subprocess.PIPE,  # held open: s_server stops at the end of its input
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        await self.read_until(b"ACCEPT")
        return self

    async def read_until(self, marker: bytes, timeout: float = RESULT_TIMEOUT_S) -> str:
        """What it printed up to `marker` (the MQTT CONNECT's protocol name, say)."""
        assert self._process is not None and self._process.stdout is not None
        async with asyncio.timeout(timeout):
            while marker not in self.output:
                chunk = await self._process.stdout.read(4096)
                if not chunk:
                    break
                self.output += chunk
        return self.output.decode("latin-1")

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
