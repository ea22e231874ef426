"""Bringing a rig up for a test session and always giving it back.

Order: the lab's place (if the rig has `[labgrid]`: waited for in its queue, then acquired),
the rig's lock (one run per rig), broker, then the twin (if the rig has `[sim]`), then GPIO0's
boot strap (released), the modem's power and the board's (switched on), the console reader,
and the reset line. Teardown
runs in reverse from one ExitStack, also on failure, timeout and Ctrl-C: power is left on,
ports closed, spawned brokers and twins stopped, the lock released, the place released last.

Nothing here waits for the device: it may be off, running, or halfway through a boot, and a
native USB console may not exist yet. Putting it in a known state is bring-up's work
(`hil.bringup`), once the MQTT recorder listens.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.broker import BrokerDriver, BrokerEndpoint
from hil.console import ConsoleBuffer
from hil.lab import PLACEHOLDER
from hil.lab.place import PlaceHold, wanted_classes
from hil.lock import RigLock
from hil.mqtt import tls_context
from hil.power import PowerDriver
from hil.proxy import MqttProxy
from hil.proxy.tls import terminating_context
from hil.reset import ResetDriver
from hil.rig import DriverConfig, Rig
from hil.sim.credentials import SessionTls, session_tls
from hil.sim.process import TwinProcess

log = logging.getLogger("hil.session")


class RigSession:
    """The open resources of one rig; `rig` is updated with the twin's real port paths."""

    def __init__(
        self,
        rig: Rig,
        workdir: Path,
        console_sink: Callable[[str], None] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.rig = rig
        self.workdir = workdir
        self.console_sink = console_sink  # gets every console line, from the first boot line on
        self.notice = notice or _to_stderr  # what a person waiting should see now (the queue)
        self.place: PlaceHold | None = None
        self.broker: BrokerDriver | None = None
        self.endpoint: BrokerEndpoint | None = None
        self.proxy: MqttProxy | None = None  # with `[broker] proxy = true`, the device's way in
        self.twin: TwinProcess | None = None
        self.tls: SessionTls | None = None  # a virtual rig's certificates, when it speaks TLS
        self.power: PowerDriver | None = None
        self.board_power: PowerDriver | None = None
        self.reset: ResetDriver | None = None
        self.console: ConsoleBuffer | None = None
        self._stack = contextlib.ExitStack()

    def start(self) -> RigSession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        rig = self.rig
        console_port = getattr(rig.console.options, "port", None) or ""
        if rig.labgrid is not None:
            self.place = PlaceHold(rig.labgrid, wanted_classes(rig), self.notice)
            self._stack.callback(self.place.release)
            self.rig = rig = rig.with_lab_ports(self.place.acquire())
        lock = RigLock(rig.path, rig.name)
        lock.acquire()
        self._stack.callback(lock.release)
        broker = rig.broker
        if rig.sim is not None:  # its certificates are made here, in a folder that goes with it
            private = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="hil-tls-"))
            self.tls = session_tls(broker, Path(private))
            broker = self.tls.broker
        self.broker = broker.cls(broker.options, self.workdir / "broker")
        self._stack.callback(self.broker.stop)
        self.endpoint = self.broker.start()
        log.info("broker %s (%s)", self.endpoint, rig.broker.name)
        device_address = f"{self.endpoint.host}:{self.endpoint.port}"
        if rig.proxy is not None:
            device_address = self._start_proxy(rig)
        if rig.sim is not None:
            self.twin = TwinProcess()
            self._stack.callback(self.twin.stop)
            sim_dir = self.workdir / "sim"
            sim_dir.mkdir(parents=True, exist_ok=True)
            ports = self.twin.start(
                sim_dir,
                device_address,
                rig.profile,
                rig.sim,
                username=getattr(rig.broker.options, "username", None),
                password_env=getattr(rig.broker.options, "password_env", None),
                tls=self.tls.device if self.tls else None,
            )
            log.info("virtual rig up: %s", ports)
            self.rig = rig = rig.with_sim_dir(sim_dir)
        self._release_strap(rig)
        self.power = self._switch_on(rig.power, rig.power_common, "power")
        self.board_power = self._switch_on(rig.board_power, rig.board_power_common, "board_power")
        self.console = rig.console.cls(rig.console.options, rig.profile)
        self.console.sink = self.console_sink
        self._follow_place(self.console, console_port)
        self._stack.callback(self.console.close)
        if rig.reset_means:
            self.console.start()  # bring-up restarts the device; its port may come only then
        else:
            self.console.open()  # nothing will make it appear: it must be there now
        if rig.reset is not None:
            self.reset = rig.reset.cls(rig.reset.options, rig.directory, self.console)

    def _start_proxy(self, rig: Rig) -> str:
        """The MQTT proxy in front of the broker; the address the device is to use.

        It reaches the broker as the harness does (TLS on the rig's files). A twin that speaks
        TLS has it ended at the proxy, on the broker's certificate and under the broker's host
        name (the one the device checks and names in SNI); a hardware device speaks plain MQTT.
        """
        assert self.endpoint is not None and self.broker is not None and rig.proxy is not None
        device_tls = None
        if self.tls is not None and self.tls.device is not None:
            device_tls = terminating_context(self.broker.options)
        self.proxy = MqttProxy(
            (self.endpoint.host, self.endpoint.port),
            upstream_tls=tls_context(self.endpoint),
            device_tls=device_tls,
            listen=rig.proxy.listen,
        )
        self._stack.callback(self.proxy.stop)
        host, port = self.proxy.start()
        log.info("MQTT proxy for the device on %s:%d", host, port)
        if device_tls is not None:
            host = self.endpoint.host
        return f"{host}:{port}"

    def _follow_place(self, console: ConsoleBuffer, port: str) -> None:
        """A console on a place's port (`{labgrid:NAME}`) looks it up again whenever it is away:
        the exporter serves a port that came back on a new TCP port."""
        found = PLACEHOLDER.fullmatch(port)
        if self.place is None or found is None or not hasattr(console, "locate"):
            return
        place, name = self.place, found[1]
        console.locate = lambda: place.url(name)

    def _release_strap(self, rig: Rig) -> None:
        """Let GPIO0's strap go before any power is switched on: a run that died while writing
        the firmware may have left it held, and the chip would start its serial loader at the
        next restart instead of the app."""
        config = rig.boot_strap
        if config is None:
            return
        strap = config.cls(
            config.options, rig.boot_strap_common, rig.directory, section="boot_strap"
        )
        strap.open()
        try:
            strap.off()
        finally:
            strap.close()
        log.info("boot strap released: %s", strap.describe())

    def _switch_on(self, config: DriverConfig | None, common, section: str) -> PowerDriver | None:
        """Open a power switch and turn it on; teardown leaves it on and closes it."""
        if config is None:
            return None
        driver = config.cls(config.options, common, self.rig.directory, section=section)
        driver.open()
        self._stack.callback(driver.close)
        self._stack.callback(self._back_on, driver)
        driver.on()
        return driver

    @staticmethod
    def _back_on(driver: PowerDriver) -> None:
        """Teardown never leaves the device or its modem without power."""
        if driver.is_on is not True:
            log.info("teardown: switching %s back on", driver.describe())
            driver.on()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> RigSession:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
