"""A broker for a twin started without one: mosquitto on a free loopback port, else amqtt.

For `python -m hil.sim` used by hand; the harness always passes its own broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from hil.broker import BrokerError, free_port

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


class LocalBroker:
    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._amqtt = None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    async def start(self) -> tuple[str, int]:
        self.port = free_port(HOST)
        mosquitto = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if mosquitto:
            self._start_mosquitto(mosquitto)
        else:
            await self._start_amqtt()
        await self._wait_listening()
        return self.address

    def _start_mosquitto(self, binary: str) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="hil-sim-broker-")
        conf = Path(self._workdir.name) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} {HOST}\nallow_anonymous true\n")
        self._process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def _start_amqtt(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "auth": {"allow-anonymous": True},
        }
        self._amqtt = Broker(config)
        await self._amqtt.start()

    async def _wait_listening(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                if self._process is not None and self._process.poll() is not None:
                    raise BrokerError(
                        f"mosquitto exited with {self._process.returncode} on port {self.port};"
                        " pass --broker HOST:PORT to use another broker"
                    ) from None
                if loop.time() > deadline:
                    raise BrokerError(
                        f"local broker not listening on {HOST}:{self.port} after"
                        f" {START_TIMEOUT_S:.0f} s; pass --broker HOST:PORT"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._amqtt is not None:
            await self._amqtt.shutdown()
            self._amqtt = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
