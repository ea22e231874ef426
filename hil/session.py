"""Bringing a rig up for a test session and always giving it back.

Order: the rig's lock (one run per rig), broker, then the twin (if the rig has `[sim]`), then
power (switched on), then the console. Teardown runs in reverse from one ExitStack, also on
failure, timeout and Ctrl-C: power is left on, ports closed, spawned brokers and twins stopped,
the lock released.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.broker import BrokerDriver, BrokerEndpoint
from hil.console import ConsoleBuffer
from hil.lock import RigLock
from hil.power import PowerDriver
from hil.rig import Rig
from hil.sim.process import TwinProcess

log = logging.getLogger("hil.session")


class RigSession:
    """The open resources of one rig; `rig` is updated with the twin's real port paths."""

    def __init__(
        self, rig: Rig, workdir: Path, console_sink: Callable[[str], None] | None = None
    ) -> None:
        self.rig = rig
        self.workdir = workdir
        self.console_sink = console_sink  # gets every console line, from the first boot line on
        self.broker: BrokerDriver | None = None
        self.endpoint: BrokerEndpoint | None = None
        self.twin: TwinProcess | None = None
        self.power: PowerDriver | None = None
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
        lock = RigLock(rig.path, rig.name)
        lock.acquire()
        self._stack.callback(lock.release)
        self.broker = rig.broker.cls(rig.broker.options, self.workdir / "broker")
        self._stack.callback(self.broker.stop)
        self.endpoint = self.broker.start()
        log.info("broker %s (%s)", self.endpoint, rig.broker.name)
        if rig.sim is not None:
            self.twin = TwinProcess()
            self._stack.callback(self.twin.stop)
            sim_dir = self.workdir / "sim"
            sim_dir.mkdir(parents=True, exist_ok=True)
            ports = self.twin.start(
                sim_dir,
                f"{self.endpoint.host}:{self.endpoint.port}",
                rig.profile,
                rig.sim,
                username=getattr(rig.broker.options, "username", None),
                password_env=getattr(rig.broker.options, "password_env", None),
            )
            log.info("virtual rig up: %s", ports)
            self.rig = rig = rig.with_sim_dir(sim_dir)
        if rig.power is not None:
            self.power = rig.power.cls(rig.power.options, rig.power_common, rig.directory)
            self.power.open()
            self._stack.callback(self.power.close)
            self._stack.callback(self._power_back_on)
            self.power.on()
        self.console = rig.console.cls(rig.console.options, rig.profile)
        self.console.sink = self.console_sink
        if rig.sim is None:
            self.console.open()
            self._stack.callback(self.console.close)
            return
        # The twin's device boots when the twin starts: that boot belongs to bring-up.
        with self.console.reboot_expected():
            self.console.open()
            self._stack.callback(self.console.close)
            if not self.console.wait(rig.profile.console.firmware_start, rig.profile.limits.boot_s):
                raise RuntimeError(
                    f"the virtual rig's device did not print its start line within "
                    f"{rig.profile.limits.boot_s:g} s; see the twin log in {self.workdir / 'sim'}"
                )

    def _power_back_on(self) -> None:
        """Teardown never leaves the device's modem without power."""
        if self.power is not None and self.power.is_on is not True:
            log.info("teardown: switching modem power back on")
            self.power.on()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> RigSession:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
